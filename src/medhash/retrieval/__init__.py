"""Retrieval: indexes of binary codes (:mod:`.index`), their search engines (:mod:`.engines`), slice search
(:mod:`.search`) and patient search (:mod:`.patients`)."""
