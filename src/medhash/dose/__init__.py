"""Dose: prediction from similar patients (:mod:`.prediction`) and the OpenKBP dose and DVH scores (:mod:`.scores`)."""
