"""Normalised Hamming against Euclidean distance, and what the kernel width gamma does to it.

The talk's Figure 12 shows a flat scatter; the closed form of Raginsky & Lazebnik (Lemma 2.3,
:func:`medhash.hashing.expected_hamming_fraction`) explains it: with gamma too large every pair is
"far" and all normalised distances sit near 4 / pi^2 ≈ 0.405 (saturated, "flat"); with gamma too
small every pair is "near", most codes are identical and ties swamp the ranking ("all ties").
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ..hashing import KernelLSH, expected_hamming_fraction, hamming_distances
from .metrics import dice_from_overlap, tie_aware_overlap
from .overlap import knn_truth

SATURATION = 4.0 / np.pi ** 2
"""Limit of the expected normalised Hamming distance for far pairs."""


def sample_pairs(rows: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` pairs (i, j), i != j, of ``rows`` drawn with ``seed``."""
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng([seed, 12])
    a = rng.integers(0, len(rows), n_pairs)
    b = (a + rng.integers(1, len(rows), n_pairs)) % len(rows)
    return rows[a], rows[b]


def pair_hamming(codes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(len(i),) Hamming distances between codes[i] and codes[j] (packed uint8 codes)."""
    x = np.bitwise_xor(codes[i], codes[j])
    return np.unpackbits(x, axis=1).sum(axis=1)


def hamming_vs_euclidean(X: np.ndarray, rows: np.ndarray, bits: list[int], *, gamma: float | str = "auto",
                         seed: int = 0, n_pairs: int = 2000) -> dict:
    """Normalised Hamming distance of sampled pairs beside their Euclidean distance.

    Returns
    -------
    dict: ``gamma`` (fitted), ``euclidean`` (n_pairs,) and per bit length (str) ``hamming_fraction``
    (n_pairs,), ``expected`` (closed form at each pair's distance), ``rms_deviation`` and
    ``spearman`` (rank correlation of Hamming with Euclidean distance).
    """
    X = np.asarray(X, dtype=np.float32)
    i, j = sample_pairs(rows, n_pairs, seed)
    r = np.linalg.norm(X[i].astype(np.float64) - X[j], axis=1)
    out: dict = {"euclidean": r, "per_bits": {}}
    for b in bits:
        h = KernelLSH(n_bits=int(b), gamma=gamma, seed=seed).fit(X[rows])
        frac = pair_hamming(h.transform(X), i, j) / float(b)
        exp = expected_hamming_fraction(r, h.gamma_)
        out["gamma"] = h.gamma_
        out["per_bits"][str(b)] = {"hamming_fraction": frac, "expected": exp,
                                   "rms_deviation": float(np.sqrt(np.mean((frac - exp) ** 2))),
                                   "spearman": float(spearmanr(frac, r).statistic)}
    return out


def regime(gamma: float, r_pairs: np.ndarray, n_bits: int) -> str:
    """``"flat"`` when 9 pairs in 10 are saturated (expected fraction > 95 % of 4/pi^2), ``"all ties"``
    when the median pair is expected to differ in fewer than 1 bit, else ``"useful"``."""
    lo, med = np.percentile(r_pairs, [10, 50])
    if expected_hamming_fraction(lo, gamma) > 0.95 * SATURATION:
        return "flat"
    if expected_hamming_fraction(med, gamma) * n_bits < 1.0:
        return "all ties"
    return "useful"


def gamma_sweep(X: np.ndarray, rows: np.ndarray, queries: np.ndarray, eu: np.ndarray, excluded: np.ndarray,
                factors: list[float], *, n_bits: int = 256, k: int = 50, seed: int = 0, n_pairs: int = 2000,
                progress=None) -> dict:
    """Dice@k, rank correlation and ties for gamma = factor x gamma_auto.

    Parameters
    ----------
    X : (n, D) features; rows : the rows hashed (fit on them); queries, eu, excluded : as in
        :mod:`.overlap` (one mode).
    factors : multiples of the automatic gamma (1 is gamma auto itself).

    Returns
    -------
    dict: ``gamma_auto`` and ``points``, one per factor: gamma, factor, dice (mean Dice@k),
    spearman (pairs), mean_fraction (mean normalised Hamming of the pairs), tied_fraction (mean
    share of the allowed items tied at the query's k-th Hamming distance), regime.
    """
    X = np.nan_to_num(np.asarray(X, dtype=np.float32))
    auto = KernelLSH(n_bits=n_bits, gamma="auto", seed=seed).fit(X[rows]).gamma_
    i, j = sample_pairs(rows, n_pairs, seed)
    r = np.linalg.norm(X[i].astype(np.float64) - X[j], axis=1)
    truth = knn_truth(eu, excluded, k)
    allowed = (~excluded).sum(axis=1)
    points = []
    for f in factors:
        g = float(auto * f)
        h = KernelLSH(n_bits=n_bits, gamma=g, seed=seed).fit(X[rows])
        codes = h.transform(X)
        ham = np.where(excluded, np.inf, hamming_distances(codes[queries], codes).astype(np.float64))
        dice = np.array([dice_from_overlap(tie_aware_overlap(ham[q], truth[q], k), k) for q in range(len(queries))])
        kth = np.partition(ham, k - 1, axis=1)[:, k - 1]
        tied = (ham == kth[:, None]).sum(axis=1) / allowed
        frac = pair_hamming(codes, i, j) / n_bits
        rho = spearmanr(frac, r).statistic if np.ptp(frac) > 0 else 0.0
        points.append({"factor": float(f), "gamma": g, "dice": float(dice.mean()), "spearman": float(rho),
                       "mean_fraction": float(frac.mean()), "tied_fraction": float(tied.mean()),
                       "regime": regime(g, r, n_bits)})
        if progress is not None:
            progress.update(1)
    return {"gamma_auto": float(auto), "n_bits": n_bits, "k": k, "points": points}
