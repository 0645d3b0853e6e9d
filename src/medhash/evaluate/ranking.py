"""The Hamming method of the report: its hasher, and result lists ranked by the product's own search code.

:func:`method_hasher` is the named index's own fitted hasher (what its codes were made with), else kernel
LSH fitted on the candidates.

The lists the report scores (relevance, retrieval examples) are what ``medhash search`` would return:
:func:`medhash.retrieval.hamming_topk` over an exact engine of the codes (:class:`~medhash.retrieval.FlatEngine`),
ties at equal Hamming distance broken by archive row, the smaller first.
"""
from __future__ import annotations

import numpy as np

from ..hashing import Hasher, KernelLSH
from ..retrieval import FlatEngine, hamming_topk


def hamming_lists(codes: np.ndarray, queries: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) archive rows nearest to each query by Hamming distance, among its allowed rows.

    Parameters
    ----------
    codes : (n, n_bytes) uint8 packed codes of every archive row.
    queries : (nq,) archive rows of the queries.
    excluded : (nq, n) bool, True where a row may not be returned for a query (at least ``k`` allowed
        rows per query).
    k : results per query.

    Returns
    -------
    (nq, k) int64 archive rows, nearest first, ties by row.
    """
    allowed = np.flatnonzero(~np.asarray(excluded).all(axis=0))          # rows some query may get
    engine = FlatEngine(codes[allowed], shards=1)
    _, items = hamming_topk(engine, np.ascontiguousarray(codes[queries]), k, allowed,
                            [ex[allowed] for ex in excluded])
    if (items < 0).any():
        raise ValueError(f"some query has fewer than k = {k} allowed rows")
    return allowed[items]


def method_hasher(fs, X: np.ndarray, candidates: np.ndarray, n_bits: int, gamma, seed: int) -> Hasher:
    """The hasher of the Hamming method for the feature set ``fs`` (:class:`~.data.FeatureSet`).

    The index's own fitted hasher when ``fs`` comes from an index; else a
    :class:`~medhash.hashing.KernelLSH` of ``n_bits``, ``gamma`` and ``seed`` fitted on the rows
    ``candidates`` of ``X`` (n, D).
    """
    if fs.hasher is not None:
        return fs.hasher
    return KernelLSH(n_bits=n_bits, gamma=gamma, seed=seed).fit(X[candidates])
