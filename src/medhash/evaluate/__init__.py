"""Evaluation without labels: overlap of Hamming and Euclidean neighbours, and clinical relevance."""
from .metrics import dice_from_overlap, jaccard_from_dice, set_jaccard, tie_aware_overlap

__all__ = ["dice_from_overlap", "jaccard_from_dice", "set_jaccard", "tie_aware_overlap"]
