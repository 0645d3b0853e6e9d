"""Evaluation without labels: overlap of Hamming and Euclidean neighbours, and clinical relevance.

:func:`evaluate` runs everything and writes the HTML report (``medhash evaluate``).
"""
from .doseloo import own_dose_score
from .metrics import dice_from_overlap, jaccard_from_dice, set_jaccard, tie_aware_overlap
from .run import SCHEMA, evaluate, evaluate_dose

__all__ = ["SCHEMA", "dice_from_overlap", "evaluate", "evaluate_dose", "own_dose_score", "jaccard_from_dice", "set_jaccard", "tie_aware_overlap"]
