"""Deterministic Hamming top-k over an :class:`~medhash.retrieval.engines.base.Engine`.

Ties at equal Hamming distance are broken by an optional exact distance (``tiebreak``: the
Euclidean distance of the features, given by :meth:`medhash.retrieval.index.Index.search`), then
by a key per item (the archive row, the smaller first), also across the k-th distance: every item
tied there is considered, so the result does not depend on the engine's internal order, and an
exact copy of the query (Euclidean distance 0) comes before the other items at its Hamming
distance. The exact distance is asked only for the candidates within the k-th distance that share
their Hamming distance with another candidate (none when all distances differ). With an exact
engine the result is the exact Hamming top-k; with an approximate one (``ivf``, ``hnsw``) the best
k of the candidates it returns, with their exact distances, by the same rule.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

TieBreak = Callable[[int, np.ndarray], np.ndarray]
"""``tiebreak(q, items)``: (len(items),) float exact distances of query ``q`` to the items (positions)."""

from .engines.base import Engine


def hamming_topk(engine: Engine, codes_q: np.ndarray, k: int, keys: np.ndarray,
                 excluded: list[np.ndarray] | None = None,
                 tiebreak: TieBreak | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hamming top-k with ties broken by ``tiebreak`` (smaller first), then ``keys``, per query.

    Parameters
    ----------
    engine : the engine holding the items.
    codes_q : (nq, n_bytes) uint8 packed query codes.
    k : neighbours wanted per query (fewer when fewer items are allowed).
    keys : (ntotal,) int64 tie-breaking key of each item (the archive row).
    excluded : per query, a bool mask (ntotal,) of items not to return, or None.
    tiebreak : ``tiebreak(q, items)`` -> (len(items),) float exact distances of query q to the
        items; asked only for candidates tied at equal Hamming distance. None: ``keys`` alone.

    Returns
    -------
    D : (nq, k) int32 Hamming distances, -1 where there is no result.
    I : (nq, k) int64 item positions, -1 where there is no result.
    """
    nq, n = len(codes_q), engine.ntotal
    if nq == 1 and excluded is None and 0 < k and k + 5 <= n:
        return _topk_one(engine, codes_q, k, keys, tiebreak)
    D_out = np.full((nq, k), -1, dtype=np.int32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    if n == 0 or k <= 0:
        return D_out, I_out
    n_ex = [0 if excluded is None or excluded[q] is None else int(excluded[q].sum()) for q in range(nq)]
    want = min(n, 2 * (k + max(n_ex)) + 1)
    D, I = engine.search(np.ascontiguousarray(codes_q), want)
    for q in range(nq):
        ex = None if excluded is None else excluded[q]
        kk = min(k, n - n_ex[q])
        d, i = _query_topk(engine, codes_q[q:q + 1], D[q], I[q], kk, ex, want < n)
        kk = min(kk, len(i))
        if kk <= 0:
            continue
        d, i = _order(d, i, keys, kk, tiebreak, q)
        D_out[q, :kk], I_out[q, :kk] = d, i
    return D_out, I_out


def _order(d: np.ndarray, i: np.ndarray, keys: np.ndarray, k: int, tiebreak: TieBreak | None,
           q: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k best of candidates (distances d, positions i): by Hamming distance, then the exact
    distance of the tied ones (``tiebreak``), then ``keys``; candidates beyond the k-th distance are
    dropped first, so that only ties that can change the result are resolved."""
    if len(d) > k:
        keep = d <= np.partition(d, k - 1)[k - 1]
        d, i = d[keep], i[keep]
    if tiebreak is not None and len(d) > 1:
        tied = np.bincount(d)[d] > 1           # d: small non-negative ints (at most the code length)
        if tied.any():
            e = np.zeros(len(d), dtype=np.float64)
            e[tied] = tiebreak(q, i[tied])
            o = np.lexsort((keys[i], e, d))[:k]
            return d[o], i[o]
    o = np.lexsort((keys[i], d))[:k]
    return d[o], i[o]


def _drop(d: np.ndarray, i: np.ndarray, ex: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The results whose item is not excluded."""
    if ex is None:
        return d, i
    keep = ~ex[i]
    return d[keep], i[keep]


def _query_topk(engine: Engine, code_q: np.ndarray, d_all: np.ndarray, i_all: np.ndarray, kk: int,
                ex: np.ndarray | None, cut: bool) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of one query of a batch: its valid, non-excluded results, completed by a range
    search when ties at the kk-th distance may have been cut (``cut``: fewer results than items)."""
    valid = i_all >= 0
    d, i = _drop(d_all[valid], i_all[valid], ex)
    if not engine.exact:
        return d, i
    if kk <= 0:
        return d[:0], i[:0]
    # want >= kk + n_ex, so at least kk items are left; all items tied with the kk-th are among
    # the returned ones when the farthest returned item is farther than the kk-th
    dk = int(np.sort(d)[kk - 1])
    if cut and int(d_all[valid].max()) <= dk:
        # ties at the kk-th distance may have been cut by the engine: take every item within it
        rd, ri = engine.range_search(np.ascontiguousarray(code_q), dk + 1)
        d, i = _drop(rd.astype(np.int32), ri.astype(np.int64), ex)
    return d, i


def _fast_extra(k: int, n: int) -> int:
    """Extra neighbours the single-query path asks for, so that items tied with the k-th are rarely
    cut (then one range search completes them). Small indexes: few, the heap is a visible part of
    a 20 µs scan; large ones: 4k, ties are many and a second scan costs far more (benchmarks/search.py)."""
    return 4 if n < 50_000 else 4 * k


def _topk_one(engine: Engine, codes_q: np.ndarray, k: int, keys: np.ndarray,
              tiebreak: TieBreak | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hamming_topk` for one query and no exclusion: the interactive case, kept lean."""
    m = min(engine.ntotal, k + 1 + _fast_extra(k, engine.ntotal))
    q = np.ascontiguousarray(codes_q, dtype=np.uint8)
    D, I = engine.search(q, m)
    d, i = D[0], I[0]
    if not engine.exact:
        ok = i >= 0
        d, i = _order(d[ok], i[ok], keys, k, tiebreak)
        return d[None], i[None]
    dk = d[k - 1]
    if d[-1] > dk or m == engine.ntotal:  # every item tied with the k-th was returned
        keep = d <= dk
        d, i = d[keep], i[keep]
    else:  # ties at the k-th distance may have been cut: take every item within it
        d, i = engine.range_search(q, int(dk) + 1)
        d, i = d.astype(np.int32), i.astype(np.int64)
    d, i = _order(d, i, keys, k, tiebreak)
    return d[None], i[None]
