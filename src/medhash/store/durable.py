"""Write primitives shared by the archive, the feature caches and the indexes.

Every append-only file in an archive has its committed length recorded elsewhere (the catalog, a
JSON sidecar, a manifest) and written *after* the data. :func:`append_rows` therefore first cuts
the file back to its committed length (dropping what a killed writer left), then appends and
flushes to disk. :func:`write_json_atomic` replaces a JSON file in one step, and
:func:`write_pickle_atomic` a pickle (a fitted hasher).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np


def append_rows(path: Path, committed_bytes: int, data: np.ndarray) -> None:
    """Append ``data``'s bytes after the first ``committed_bytes`` of ``path`` and fsync."""
    with open(path, "ab+") as f:
        f.truncate(committed_bytes)
        f.seek(committed_bytes)
        f.write(np.ascontiguousarray(data).tobytes())
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, allow_nan=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_pickle_atomic(path: Path, payload) -> None:
    """Pickle ``payload`` to a temporary file beside ``path`` and rename it over ``path``, so a crash
    never leaves a half-written file under ``path`` (the temporary file is removed on error)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RENAME_DURABLE_WITH_FILE = frozenset({"ext4", "xfs", "btrfs"})
"""Journaling filesystems on which ``fsync`` of a file after it was renamed also makes the rename durable:
the rename is logged in a transaction that touches the file's inode, and fsync commits the journal up
to that inode's last transaction (ext4, XFS), or logs the inode's new name (btrfs)."""


def filesystem_type(path: str | os.PathLike[str]) -> str:
    """The type of the filesystem holding ``path`` (``"ext4"``, ``"xfs"``, ``"tmpfs"`` ...), read from
    ``/proc/self/mountinfo``; ``""`` where that cannot be read (not Linux)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040: a space
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    except OSError:
        return ""
    return kind
