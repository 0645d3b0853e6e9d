"""Is the retrieval useful for planning? Cross-patient relevance and dose from neighbours.

Results always come from *other* patients here: a new patient's archive holds only earlier ones.

* Organ sets: the structures drawn on a slice (organs and targets; not the possible-dose mask, not
  the external contour). Organ-set Jaccard@k = mean over the k results of the Jaccard of the query's
  and the result's sets (two empty sets count 1); precision@k = share of the k results whose
  organ-set Jaccard with the query is at least :data:`RELEVANT_JACCARD`.
* Dose from neighbours: the mean dose slice of the k results predicts the query's dose; the score
  is the mean absolute error in Gy over the query's OpenKBP possible-dose mask where it has one,
  else over its body (HU > -500), as the OpenKBP dose score. Predicting 0 Gy is the floor to beat.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.grid import BODY_HU
from .metrics import set_jaccard

RELEVANT_JACCARD = 0.5
"""A result counts as relevant (precision@k) when its organ-set Jaccard with the query is at least this."""

EXTERNAL_NAMES = frozenset({"BODY", "EXTERNAL", "SKIN", "OUTER CONTOUR", "OUTLINE", "PATIENT"})
"""Structure names taken for the external contour (upper case): on every slice, so not informative."""


def organ_sets(archive) -> list[frozenset[str]]:
    """Per archive row, its organ set without external-contour names."""
    return [frozenset(n for n in s if n.upper() not in EXTERNAL_NAMES) for s in archive.structure_sets()]


def topk(dist: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) rows nearest first, ties by row, among allowed items (``dist`` (nq, n))."""
    d = np.where(excluded, np.inf, np.asarray(dist, dtype=np.float64))
    part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(d), 1))
    # a partition may cut a tie at the k-th distance: widen to every item tied there, then sort
    out = np.empty((len(d), k), dtype=np.int64)
    for q in range(len(d)):
        kth = d[q, part[q]].max()
        cand = np.flatnonzero(d[q] <= kth)
        out[q] = cand[np.lexsort((cand, d[q, cand]))][:k]
    return out


def rerank_depth(excluded: np.ndarray, k: int, depth: int) -> int:
    """The re-rank depth used: ``depth`` cut to the fewest allowed items of a query, never below ``k``."""
    return max(k, min(depth, int((~excluded).sum(axis=1).min())))


def reranked(shortlists: np.ndarray, eu: np.ndarray, k: int) -> np.ndarray:
    """(nq, k): each query's shortlist (nq, depth) of rows re-ordered by Euclidean distance ``eu``
    (nq, n), ties by row (as :meth:`medhash.retrieval.Index.search` with ``rerank``)."""
    out = np.empty((len(shortlists), k), dtype=np.int64)
    for q, short in enumerate(shortlists):
        out[q] = short[np.lexsort((short, eu[q, short]))][:k]
    return out


def random_topk(excluded: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(nq, k) distinct allowed rows drawn at random (seeded): the baseline."""
    rng = np.random.default_rng([seed, 7])
    return np.stack([rng.choice(np.flatnonzero(~ex), size=k, replace=False) for ex in excluded])


def organ_scores(lists: np.ndarray, queries: np.ndarray, sets: list[frozenset[str]], ks: list[int]) -> dict:
    """Organ-set Jaccard@k and precision@k of result lists (nq, >= max k), over queries with structures.

    Returns ``{"n_queries", "jaccard": {k: mean}, "precision": {k: mean}}`` (None values when no
    query has a structure).
    """
    keep = [q for q in range(len(queries)) if sets[queries[q]]]
    if not keep:
        return {"n_queries": 0, "jaccard": {str(k): None for k in ks}, "precision": {str(k): None for k in ks}}
    J = np.array([[set_jaccard(sets[queries[q]], sets[r]) for r in lists[q, :max(ks)]] for q in keep])
    return {"n_queries": len(keep),
            "jaccard": {str(k): float(J[:, :k].mean()) for k in ks},
            "precision": {str(k): float((J[:, :k] >= RELEVANT_JACCARD).mean()) for k in ks}}


def score_masks(archive, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nq, 128, 128) bool scoring region per query (possible-dose mask, else body) and (nq,) bool
    True where it is the possible-dose mask."""
    masks, present = archive.possible_dose_masks(queries)
    body = np.asarray(archive.ct[queries]) > BODY_HU
    masks[~present] = body[~present]
    return masks, present


def dose_scores(archive, lists: dict[str, np.ndarray], queries: np.ndarray, ks: list[int]) -> dict:
    """Mean absolute error (Gy) of the mean dose of the top-k as the query's dose, per method and k.

    Parameters
    ----------
    lists : method -> (nq, >= max k) result rows (queries without dose are skipped).

    Returns
    -------
    dict: ``n_queries`` (with dose), ``possible_dose_mask_queries`` (of them, with a possible-dose
    mask); ``zero`` (MAE of predicting 0 Gy) and ``mae`` (method -> k -> mean MAE) over all of them
    (mask, else body); ``zero_pdm`` and ``mae_pdm`` the same over the queries with a possible-dose
    mask only (the OpenKBP definition; None where there are none).
    """
    has = archive.table()["has_dose"]
    keep = np.flatnonzero(has[queries])
    out = {"n_queries": int(len(keep)), "possible_dose_mask_queries": 0, "zero": None, "zero_pdm": None,
           "mae": {m: {str(k): None for k in ks} for m in lists},
           "mae_pdm": {m: {str(k): None for k in ks} for m in lists}}
    if not len(keep):
        return out
    dose = archive.dose
    masks, present = score_masks(archive, queries[keep])
    out["possible_dose_mask_queries"] = int(present.sum())
    truth = [np.asarray(dose[queries[q]])[m] for q, m in zip(keep, masks)]
    zero = np.array([np.abs(t).mean() for t in truth])
    out["zero"] = float(zero.mean())
    out["zero_pdm"] = float(zero[present].mean()) if present.any() else None
    kmax = max(ks)
    for method, L in lists.items():
        errs = np.zeros((len(keep), len(ks)))
        for n, (q, m) in enumerate(zip(keep, masks)):
            rows = L[q, :kmax]
            order = np.argsort(rows)                       # memmap reads in row order
            vals = np.empty((kmax, int(m.sum())), dtype=np.float64)
            vals[order] = np.asarray(dose[rows[order]])[:, m]
            csum = np.cumsum(vals, axis=0)
            for c, k in enumerate(ks):
                errs[n, c] = np.abs(csum[k - 1] / k - truth[n]).mean()
        out["mae"][method] = {str(k): float(errs[:, c].mean()) for c, k in enumerate(ks)}
        if present.any():
            out["mae_pdm"][method] = {str(k): float(errs[present, c].mean()) for c, k in enumerate(ks)}
    return out


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))
