"""How well Hamming retrieval keeps the Euclidean neighbours (the talk's Figures 24-26).

For each query and each code length, the k items nearest by Hamming distance are compared with the
k nearest by Euclidean distance of the same features (the query itself excluded; same-patient
items included or excluded, both reported): Dice = overlap / k with Hamming ties at the k-th
distance counted as the expected overlap under random tie-breaking, Jaccard = D / (2 - D).
"""
from __future__ import annotations

import time

import numpy as np
from scipy.spatial.distance import cdist

from ..hashing import HASHERS, KernelLSH, describe_hasher, hamming_distances, make_hasher
from .metrics import dice_from_overlap, jaccard_from_dice, tie_aware_overlap

MODES = ("included", "excluded")
"""Same-patient items included in or excluded from both retrievals."""


def euclidean_distances(X: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(nq, n) float64 Euclidean distances from rows ``queries`` of X (n, D) to every row of X."""
    X64 = np.asarray(X, dtype=np.float64)
    return cdist(X64[queries], X64)


def exclusion_masks(patients: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
    """(nq, n) bool per mode: True where an item may NOT be retrieved for a query.

    Always excluded: the query itself and rows that are not candidates. ``"excluded"`` also leaves
    out the query's own patient.
    """
    n = len(patients)
    base = np.ones((len(queries), n), dtype=bool)
    base[:, candidates] = False
    base[np.arange(len(queries)), queries] = True
    same = patients[queries][:, None] == patients[None, :]
    return {"included": base, "excluded": base | same}


def usable_ks(ks: list[int], masks: dict[str, np.ndarray]) -> list[int]:
    """The k of ``ks`` that every query can fill in every mode (enough allowed items)."""
    room = min(int((~m).sum(axis=1).min()) for m in masks.values())
    return [k for k in ks if k <= room]


def knn_truth(dist: np.ndarray, excluded: np.ndarray, k_max: int) -> np.ndarray:
    """(nq, k_max) item indices nearest first (ties by index) among the allowed items."""
    d = np.where(excluded, np.inf, dist)
    order = np.argsort(d, axis=1, kind="stable")
    return order[:, :k_max]


def overlap_table(eu: np.ndarray, ham: np.ndarray, excluded: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Per k, the (nq,) Dice of the Hamming k-NN against the Euclidean k-NN (tie-aware)."""
    truth = knn_truth(eu, excluded, max(ks))
    h = np.where(excluded, np.inf, ham.astype(np.float64))
    out = {}
    for k in ks:
        ov = np.array([tie_aware_overlap(h[j], truth[j, :k], k) for j in range(len(h))])
        out[k] = dice_from_overlap(ov, k)
    return out


def codes_overlap(codes: np.ndarray, queries: np.ndarray, eu: np.ndarray, masks: dict[str, np.ndarray],
                  ks: list[int]) -> dict[str, dict[int, np.ndarray]]:
    """mode -> k -> (nq,) Dice of the Hamming k-NN of packed ``codes`` (n, n_bytes) against the Euclidean
    k-NN (``eu`` (nq, n)), for the query rows ``queries``."""
    ham = hamming_distances(codes[queries], codes)
    return {mode: overlap_table(eu, ham, excluded, ks) for mode, excluded in masks.items()}


def index_overlap(hasher, name: str, X: np.ndarray, queries: np.ndarray, eu: np.ndarray,
                  masks: dict[str, np.ndarray], ks: list[int]) -> dict:
    """Dice and Jaccard of an index's own fitted ``hasher`` (its codes), as :func:`hamming_overlap` gives
    for kernel LSH: ``{"name", "hasher" (its description), "bits", "summary", "per_query_dice"}`` with
    the index's code length as the only length."""
    info = describe_hasher(hasher)
    n_bits = int(info["params"]["n_bits"])
    X = np.nan_to_num(np.asarray(X, dtype=np.float32))
    per_query = {mode: {n_bits: dice} for mode, dice in codes_overlap(hasher.transform(X), queries, eu, masks,
                                                                      ks).items()}
    return {"name": name, "hasher": info, "bits": n_bits, "summary": summarise(per_query),
            "per_query_dice": rounded(per_query)}


def rounded(per_query: dict) -> dict:
    """mode -> bits -> k -> list of per-query Dice, 4 decimals, string keys (metrics.json)."""
    return {m: {str(b): {str(k): np.round(v, 4).tolist() for k, v in by_k.items()} for b, by_k in by_b.items()}
            for m, by_b in per_query.items()}


def mean_ci(values: np.ndarray, z: float = 1.96) -> dict:
    """Mean, 95 % normal-approximation confidence interval of the mean, median and quartiles."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    half = float(z * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    return {"mean": m, "ci95": [m - half, m + half], "median": med, "q1": q1, "q3": q3}


def hamming_overlap(X: np.ndarray, queries: np.ndarray, eu: np.ndarray, masks: dict[str, np.ndarray],
                    bits: list[int], ks: list[int], *, gamma: float | str = "auto", seed: int = 0,
                    fit_rows: np.ndarray | None = None, progress=None) -> dict:
    """Dice and Jaccard of Hamming vs Euclidean k-NN for every code length, k and mode.

    Parameters
    ----------
    X : (n, D) features (rows not in ``fit_rows`` may be NaN; they must be excluded in ``masks``).
    queries : (nq,) rows of X.
    eu : (nq, n) Euclidean distances of the queries (:func:`euclidean_distances`).
    masks : mode -> (nq, n) excluded items (:func:`exclusion_masks`).
    bits, ks : code lengths and neighbour counts.
    gamma, seed : the hasher's (gamma "auto" is resolved on ``fit_rows``; the same for every length).
    progress : optional tqdm-like object whose ``update(1)`` is called after each length.

    Returns
    -------
    dict with ``gamma`` (the fitted value) and ``per_query``: mode -> bits -> k -> (nq,) Dice.
    """
    fit_rows = np.flatnonzero(np.isfinite(X).all(axis=1)) if fit_rows is None else fit_rows
    Xf = np.nan_to_num(np.asarray(X, dtype=np.float32))
    per_query: dict[str, dict[int, dict[int, np.ndarray]]] = {m: {} for m in masks}
    gamma_ = None
    for b in bits:
        hasher = KernelLSH(n_bits=int(b), gamma=gamma, seed=seed).fit(Xf[fit_rows])
        gamma_ = hasher.gamma_
        for mode, dice in codes_overlap(hasher.transform(Xf), queries, eu, masks, ks).items():
            per_query[mode][int(b)] = dice
        if progress is not None:
            progress.update(1)
    return {"gamma": gamma_, "per_query": per_query}


def summarise(per_query: dict) -> dict:
    """mode -> {"dice"|"jaccard": bits -> k -> :func:`mean_ci`} with string keys (JSON)."""
    out = {}
    for mode, by_bits in per_query.items():
        out[mode] = {"dice": {}, "jaccard": {}}
        for b, by_k in by_bits.items():
            out[mode]["dice"][str(b)] = {str(k): mean_ci(v) for k, v in by_k.items()}
            out[mode]["jaccard"][str(b)] = {str(k): mean_ci(jaccard_from_dice(v)) for k, v in by_k.items()}
    return out


HASHER_BITS = (16, 32, 64, 128, 256, 1024)


def compare_hashers(X: np.ndarray, queries: np.ndarray, eu: np.ndarray, excluded: np.ndarray, k: int, *,
                    bits=HASHER_BITS, seed: int = 0, fit_rows: np.ndarray | None = None, trained_epochs: int = 10,
                    progress=None, usefulness=None) -> dict:
    """Dice@k of every hasher of :data:`medhash.hashing.HASHERS` at each code length, on the same features.

    ITQ and PCA-sign give at most one bit per feature (None beyond). Returns ``{"bits", "k",
    "hashers": name -> {"dice": bits -> mean Dice or None, "fit_s": bits -> seconds or None}}``.
    With ``usefulness``, a function of the (n_queries, n) Hamming distances that returns a dict of
    scores (e.g. organ-set Jaccard@10 and dose MAE@10 of the other patients' results), each hasher
    also gets ``"usefulness": bits -> that dict or None``.
    """
    fit_rows = np.flatnonzero(np.isfinite(X).all(axis=1)) if fit_rows is None else fit_rows
    Xf = np.nan_to_num(np.asarray(X, dtype=np.float32))
    out = {"bits": list(bits), "k": k, "hashers": {}}
    for name in ("kernel-lsh", "pca-sign", "itq", "trained"):
        assert name in HASHERS
        res = {"dice": {}, "fit_s": {}}
        if usefulness is not None:
            res["usefulness"] = {}
        for b in bits:
            if name in ("itq", "pca-sign") and b > min(Xf.shape[1], len(fit_rows)):
                res["dice"][str(b)] = res["fit_s"][str(b)] = None
                if usefulness is not None:
                    res["usefulness"][str(b)] = None
            else:
                params = {"epochs": trained_epochs} if name == "trained" else {}
                h = make_hasher(name, int(b), seed=seed, **params)
                t0 = time.perf_counter()
                h.fit(Xf[fit_rows])
                res["fit_s"][str(b)] = time.perf_counter() - t0
                ham = hamming_distances(h.transform(Xf[queries]), h.transform(Xf))
                res["dice"][str(b)] = float(overlap_table(eu, ham, excluded, [k])[k].mean())
                if usefulness is not None:
                    res["usefulness"][str(b)] = usefulness(ham)
            if progress is not None:
                progress.update(1)
        out["hashers"][name] = res
    return out
