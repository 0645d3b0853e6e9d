"""Small tie-aware retrieval metrics (numpy in, numpy out).

For a query, let I_E be the k items retrieved by Euclidean distance and I_H the k retrieved by
Hamming distance: Dice = 2 |I_E ∩ I_H| / (|I_E| + |I_H|) = |I_E ∩ I_H| / k and Jaccard =
|I_E ∩ I_H| / |I_E ∪ I_H| = D / (2 - D). Hamming distances are small integers with many ties: when
several items tie at the k-th Hamming distance, I_H is not unique, so the overlap is the
*expected* overlap under a uniformly random choice among the tied items.
"""
from __future__ import annotations

import numpy as np


def tie_aware_overlap(distances: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Expected |I_truth ∩ I_k| where I_k is a k-nearest set by ``distances``, ties broken at random.

    Parameters
    ----------
    distances : (n,) distances of every candidate to the query (``np.inf`` for excluded ones, e.g.
        the query itself).
    truth : (k,) indices of the reference neighbours (e.g. the Euclidean top-k).
    k : neighbours retrieved, 1 <= k <= number of finite distances.

    Returns
    -------
    float in [0, k]: every item closer than the k-th distance counts 1; the items tied at the k-th
    distance count (slots left) / (items tied) each.
    """
    d = np.asarray(distances, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    n_finite = int(np.isfinite(d).sum())
    if not 1 <= k <= n_finite:
        raise ValueError(f"k must be between 1 and the {n_finite} candidates, not {k}")
    dk = np.partition(d, k - 1)[k - 1]
    closer = d < dk
    tied = d == dk
    slots = k - int(closer.sum())
    return float(closer[truth].sum() + slots * tied[truth].sum() / tied.sum())


def dice_from_overlap(overlap: np.ndarray | float, k: int) -> np.ndarray:
    """Dice of two k-sets with the given overlap: 2 |A ∩ B| / (|A| + |B|) = overlap / k."""
    return np.asarray(overlap, dtype=np.float64) / k


def jaccard_from_dice(dice: np.ndarray | float) -> np.ndarray:
    """Jaccard of two sets of equal size from their Dice: J = D / (2 - D)."""
    d = np.asarray(dice, dtype=np.float64)
    return d / (2.0 - d)


def set_jaccard(a: frozenset | set, b: frozenset | set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets count 1 (both slices show no structure)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
