"""Write primitives shared by the archive, the feature caches and the indexes.

Every append-only file in an archive has its committed length recorded elsewhere (the catalog, a
JSON sidecar, a manifest) and written *after* the data. :func:`append_rows` therefore first cuts
the file back to its committed length (dropping what a killed writer left), then appends and
flushes to disk. Every other file is replaced whole through :func:`replace_atomically` (the one
atomic writer: temporary file, fsync, rename, fsync of the folder): :func:`write_json_atomic` for
JSON, :func:`write_pickle_atomic` for a pickle (a fitted hasher), and engine files. :func:`file_lock`
is the one advisory file lock.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import fcntl
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ArchiveError


def append_rows(path: Path, committed_bytes: int, data: np.ndarray) -> None:
    """Append ``data``'s bytes after the first ``committed_bytes`` of ``path`` and fsync."""
    with open(path, "ab+") as f:
        f.truncate(committed_bytes)
        f.seek(committed_bytes)
        f.write(np.ascontiguousarray(data).tobytes())
        f.flush()
        os.fsync(f.fileno())


def _process_umask() -> int:
    """The process's umask (read once, at import: setting it back at once is the only way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()
"""Mode of the files written here: what ``open`` would give (``mkstemp`` alone gives 0600, which a web
server or a colleague running under another account could not read)."""


@contextmanager
def replace_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on a clean exit make it ``path``, durably.

    The caller writes the whole file under the yielded name (by any means: ``open``, faiss, torch);
    then the file is fsynced, renamed over ``path`` and the folder fsynced, so that after a crash or a
    power cut ``path`` is either the old file or the complete new one. On an exception the temporary
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def replace_dir_atomically(target: Path) -> Iterator[Path]:
    """Yield a hidden empty folder beside ``target`` to fill; on a clean exit it replaces ``target``.

    The caller writes (and fsyncs) every file in the yielded folder; then the folder is fsynced,
    the old ``target`` (if any) is renamed aside, the new folder renamed to ``target``, the old one
    removed and the parent fsynced. Folders left by a killed run (``.NAME.tmp-*``) are removed first;
    on an exception the new folder is removed and ``target`` is untouched."""
    import shutil  # start-up: only the writers of whole folders need it

    target = Path(target)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{target.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        if target.exists():
            old = root / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace ``path`` by ``data`` as indented JSON (:func:`replace_atomically`)."""
    with replace_atomically(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, allow_nan=True)
        f.write("\n")


def write_pickle_atomic(path: Path, payload) -> None:
    """Replace ``path`` by the pickle of ``payload`` (:func:`replace_atomically`)."""
    with replace_atomically(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk; for a folder, its entries (a rename or a new file in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path, *, wait_s: float | None = None, busy: str = "") -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; yields its fd.

    ``wait_s=None`` waits as long as it takes; otherwise the lock is tried until ``wait_s`` seconds
    have passed (0: once), then :class:`~medhash.errors.ArchiveError` is raised with the message ``busy``.
    The lock goes with the process: a killed holder never leaves it taken.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if wait_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ArchiveError(busy or f"{path} is locked by another process") from None
                    time.sleep(0.005)
        yield fd
    finally:
        os.close(fd)


fsync_dir = fsync_file
"""Flush a folder's entries (a rename or a new file in it) to disk (:func:`fsync_file` of the folder)."""


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
