"""The one place that picks an index's engine: :data:`ENGINES` maps an engine kind to its opener.

The kind is ``"milvus"`` when the manifest's ``backend`` is Milvus, else its ``index_type``
(``"flat"``, ``"ivf"``, ``"hnsw"``). To add an engine: implement
:class:`~medhash.retrieval.engines.base.Engine`, write an opener
``(index_dir, manifest, codes, rows) -> Engine`` and register it here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import EngineError
from .base import Engine
from .faiss_engines import open_approx, open_flat
from .milvus import open_milvus

ENGINES: dict[str, Callable[..., Engine]] = {"flat": open_flat, "ivf": open_approx, "hnsw": open_approx,
                                              "milvus": open_milvus}
"""Engine kind -> opener ``(index_dir, manifest, codes, rows) -> Engine``."""


def engine_kind(manifest: dict) -> str:
    """``"milvus"`` for an index with the Milvus backend, else its ``index_type`` (default ``"flat"``)."""
    backend = manifest.get("backend") or {"type": "local"}
    return "milvus" if backend.get("type") == "milvus" else manifest.get("index_type", "flat")


def open_engine(index_dir: Path, manifest: dict, codes: np.ndarray, rows: np.ndarray) -> Engine:
    """The engine of an index folder, as its manifest says.

    Parameters
    ----------
    index_dir : the index folder; manifest : its manifest.
    codes : (items, code_bytes) uint8 packed codes; rows : (items,) int64 archive rows.
    """
    kind = engine_kind(manifest)
    if kind not in ENGINES:
        raise EngineError(f"index {Path(index_dir).name!r} asks for the engine {kind!r}; engines: {', '.join(ENGINES)}")
    return ENGINES[kind](Path(index_dir), manifest, codes, rows)
