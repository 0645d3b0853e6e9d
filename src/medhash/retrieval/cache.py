"""Opening indexes: :func:`open_index`, and :class:`IndexCache`, the open indexes of whoever serves.

Opening an index loads its codes into its engine and its hasher: a process that answers many
searches (the web app, a CLI process running several) keeps one :class:`IndexCache` and passes it
to every call; a plain call opens the index afresh. There is no module-level cache.
"""
from __future__ import annotations

import threading
from pathlib import Path

from ..errors import IndexConfigError, NotFoundError
from ..store import layout
from .index import Index, list_indexes


class IndexCache:
    """Open :class:`Index` objects, keyed by (archive folder, index name); safe to share between threads.

    An entry is reopened when the index's manifest or any model's config changed on disk (a model
    trained again must be refused, not served), or when it was opened through another
    :class:`~medhash.store.archive.Archive` object (an Index reads through the Archive it was
    opened with, which may be closed by now).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[tuple, Index]] = {}

    def get(self, archive, name: str) -> Index:
        """The index ``name`` of ``archive``, opened once and reused while it is unchanged."""
        key = (str(Path(archive.path).resolve()), name)
        stamp = _stamp(archive, name)
        with self._lock:  # one opener per key at a time: two threads must not load the same index twice
            cached = self._entries.get(key)
            if cached is None or cached[0] != stamp or cached[1].archive is not archive:
                cached = (stamp, Index(archive, name))
                self._entries[key] = cached
            return cached[1]

    def clear(self) -> None:
        """Forget every open index."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _stamp(archive, name: str) -> tuple:
    """Modification times of the index's manifest and of every model's config."""
    mpath = layout.index_dir(archive, name) / layout.MANIFEST
    models = sorted(layout.models_dir(archive).glob("*/config.json"))
    return (mpath.stat().st_mtime_ns if mpath.is_file() else -1,
            tuple((str(p), p.stat().st_mtime_ns) for p in models))


def only_index(archive) -> str:
    """The name of the archive's only index (an error when it has none or several)."""
    names = list_indexes(archive)
    if not names:
        raise NotFoundError(f"archive {archive.path} has no index; build one first (for example a ct index of "
                            "256 bits named ct256)", param="index")
    if len(names) > 1:
        raise IndexConfigError(f"archive {archive.path} has several indexes ({', '.join(names)}); name one of them",
                               param="index")
    return names[0]


def open_index(archive, name: str | None = None, cache: IndexCache | None = None) -> Index:
    """Open an index of the archive (the only one when ``name`` is None), through ``cache`` when given.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive`.
    name : index name, or None for the archive's only index.
    cache : the caller's :class:`IndexCache`; None opens the index afresh.
    """
    if name is None:
        name = only_index(archive)
    return cache.get(archive, name) if cache is not None else Index(archive, name)
