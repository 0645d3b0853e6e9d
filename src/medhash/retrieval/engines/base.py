"""The :class:`Engine` protocol: what every search engine behind an index provides.

An engine holds the packed binary codes of an index's items, in the index's item order (position
i is the item at ``rows.i64[i]``), and answers Hamming queries over them. The ranking code
(:mod:`medhash.retrieval.topk`) uses engines only through this protocol; which engine an index
uses is chosen by :func:`medhash.retrieval.engines.registry.open_engine` from its manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    """A Hamming search engine over packed codes.

    Attributes
    ----------
    index_type : ``"flat"``, ``"ivf"``, ``"hnsw"`` or ``"milvus"``.
    exact : True when :meth:`search` returns the true nearest codes (ties at the m-th distance may
        still be cut: :meth:`range_search` completes them); False for approximate engines.
    ntotal : number of codes held.
    """

    index_type: str
    exact: bool
    ntotal: int

    def add(self, codes: np.ndarray) -> None:
        """Append (n, code_bytes) uint8 packed codes after the ones held."""

    def search(self, codes_q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The m nearest codes of each of the (nq, code_bytes) queries.

        Returns D (nq, m) int32 Hamming distances, ascending, and I (nq, m) int64 positions; -1 in
        both where fewer codes are found.
        """

    def range_search(self, code_q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code at Hamming distance < ``radius`` of one (1, code_bytes) query: D (r,) int32
        distances and I (r,) int64 positions, in no particular order (exact engines only)."""

    def save(self, path: Path) -> None:
        """Write what the engine cannot rebuild from ``codes.u8`` to ``path`` (durably), if anything."""

    def describe(self) -> dict:
        """JSON-ready description (type, size, parameters)."""
