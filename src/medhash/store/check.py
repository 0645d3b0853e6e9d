"""Checking an archive folder's own files: the catalog, the arrays, the spool and the leftovers of
interrupted writes (torch-free; what ``medhash check`` runs first).

Every check returns :class:`Finding` objects. A finding is one of three kinds:

``damage``
    something a reader would trip on or answer wrongly from: a catalog that fails SQLite's
    ``integrity_check``, committed rows missing from an array, catalog rows that point past the arrays,
    dose that is not finite or negative.
``incomplete``
    a series recorded as incomplete: the evidence of its own files says instances are missing
    (:mod:`medhash.store.series`). Nothing here can complete it; ingesting or sending the whole series
    again does.
``leftover``
    what an interrupted write left behind, harmless to readers but not clean: bytes past an array's
    committed rows, temporary files of the atomic writer, half-written spool files, received files
    not yet ingested.
``note``
    worth knowing, not wrong: a running listener, files set aside by the listener.

A finding says what ``repair`` does about it (``None``: nothing here can; its message says what to do)
and carries the function that does it (:attr:`Finding.fix`). The models, feature caches and indexes are
checked by :mod:`medhash.retrieval.verify`, the dose models by :mod:`medhash.dose.verify`; the whole
check is :func:`medhash.check.check_archive`.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ArchiveError
from .archive import _ARRAYS, FORMAT_VERSION
from .series import has_table, incomplete_series, superseded_rows
from .layout import (CATALOG, arrays_dir, archive_dir, catalog_path, dose_models_dir, features_dir, indexes_dir,
                     models_dir, spool_dir)

DAMAGE, INCOMPLETE, LEFTOVER, NOTE = "damage", "incomplete", "leftover", "note"
KINDS = (DAMAGE, INCOMPLETE, LEFTOVER, NOTE)
"""Kinds of finding, worst first."""

DOSE_CHUNK_ROWS = 1024
"""Dose rows read at a time by the value check (64 MiB)."""

_SPOOL_LOCK, _SPOOL_FAILED, _SPOOL_PART = ".lock", "failed", ".part"
"""Names of :mod:`medhash.net.spool` (store may not import net; tests/store/test_check.py keeps them equal)."""


@dataclass
class Finding:
    """One thing ``check`` found.

    Attributes
    ----------
    kind : ``"damage"``, ``"leftover"`` or ``"note"`` (module docstring).
    where : the path concerned, relative to the archive folder (``"arrays/ct.i16"``).
    what : what is wrong, in words.
    repair : what ``repair`` does about it, or None when nothing here can (``what`` says what to do).
    fix : the function that repairs it (not serialised).
    repaired : set by :func:`apply_fix` once ``fix`` ran without error; ``repair_error`` when it failed.
    """

    kind: str
    where: str
    what: str
    repair: str | None = None
    fix: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    repaired: bool = False
    repair_error: str | None = None

    def to_dict(self) -> dict:
        """The finding as JSON-ready data (without ``fix``)."""
        return {"kind": self.kind, "where": self.where, "what": self.what, "repair": self.repair,
                "repaired": self.repaired, "repair_error": self.repair_error}


def apply_fix(finding: Finding) -> None:
    """Run ``finding.fix`` (if any); record whether it worked (an exception is kept as ``repair_error``)."""
    if finding.fix is None:
        return
    try:
        finding.fix()
        finding.repaired = True
    except (OSError, ValueError, sqlite3.Error) as exc:  # a repair that fails is reported, never raised
        finding.repair_error = f"{type(exc).__name__}: {exc}"


def relative(archive, path: Path) -> str:
    """``path`` relative to the archive folder, as a POSIX string."""
    try:
        return Path(path).relative_to(archive_dir(archive)).as_posix()
    except ValueError:
        return str(path)


def _truncate(path: Path, size: int) -> Callable[[], None]:
    """A fix that cuts the file ``path`` to ``size`` bytes, durably."""
    def fix() -> None:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
    return fix


def remove_fix(path: Path) -> Callable[[], None]:
    """A fix that removes the file or folder ``path``."""
    def fix() -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return fix


def tail_finding(archive, path: Path, committed_bytes: int, what_rows: str) -> Finding | None:
    """A ``leftover`` finding when ``path`` is longer than its ``committed_bytes`` (an append a crash
    cut off before its commit), a ``damage`` one when shorter; None when exact."""
    size = path.stat().st_size if path.is_file() else 0
    where = relative(archive, path)
    if size < committed_bytes:
        return Finding(DAMAGE, where, f"{size} bytes, but the {what_rows} need {committed_bytes}: committed data is "
                                      "missing (restore the archive from a backup, or ingest again into a new one)")
    if size > committed_bytes:
        return Finding(LEFTOVER, where, f"{size - committed_bytes} bytes past the {what_rows} ({committed_bytes} "
                                        "bytes): an append interrupted before its commit",
                       f"cut the file to {committed_bytes} bytes", _truncate(path, committed_bytes))
    return None


# ---------------------------------------------------------------------- the catalog
def open_catalog(archive) -> sqlite3.Connection:
    """A read-only connection to ``ARCHIVE/catalog.sqlite``; :class:`ArchiveError` when there is none."""
    path = catalog_path(archive)
    if not path.is_file():
        raise ArchiveError(f"{archive_dir(archive)}: not a medhash archive (no {CATALOG})", param="archive")
    try:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA query_only = ON")
        return con
    except sqlite3.Error as exc:
        raise ArchiveError(f"{path}: cannot open the catalog ({exc})", param="archive") from None


def _meta(con: sqlite3.Connection, key: str) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def committed_rows(con: sqlite3.Connection) -> dict[str, int]:
    """The committed row count of each array (``ct``, ``dose``, ``masks``) as the catalog records it."""
    return {name: int(_meta(con, f"rows_{name}") or 0) for name in _ARRAYS}


def check_catalog(archive, con: sqlite3.Connection) -> list[Finding]:
    """SQLite's ``integrity_check``, the format version, and the catalog's rows against its own counts."""
    where = CATALOG
    try:
        result = [r[0] for r in con.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [Finding(DAMAGE, where, f"SQLite cannot check the catalog ({exc}); restore it from a backup")]
    if result != ["ok"]:
        return [Finding(DAMAGE, where, "SQLite integrity_check: " + "; ".join(result[:5]) +
                        "; restore the catalog from a backup")]
    version = _meta(con, "format_version")
    if version is None or not version.isdigit() or int(version) != FORMAT_VERSION:
        return [Finding(DAMAGE, where, f"archive format {version}, this medhash reads format {FORMAT_VERSION}")]
    rows = committed_rows(con)
    out = []
    if rows["ct"] != rows["dose"]:
        out.append(Finding(DAMAGE, where, f"{rows['ct']} committed CT rows but {rows['dose']} dose rows"))
    old = has_table(con, "superseded")   # rows completed series superseded (medhash.store.series)
    rows_sql = "SELECT row FROM slices" + (" UNION ALL SELECT row FROM superseded" if old else "")
    count, lo, hi = con.execute(f"SELECT COUNT(*), MIN(row), MAX(row) FROM ({rows_sql})").fetchone()
    if count != rows["ct"] or (count and (lo != 0 or hi != count - 1)):
        out.append(Finding(DAMAGE, where, f"the slices table has {count} rows numbered {lo} to {hi}, but the arrays "
                                          f"commit {rows['ct']} rows numbered 0 to {rows['ct'] - 1}"))
    masks_sql = "SELECT mask_row FROM slice_masks" + (" UNION ALL SELECT mask_row FROM superseded_masks" if old else "")
    m_count, m_hi = con.execute(f"SELECT COUNT(*), MAX(mask_row) FROM ({masks_sql})").fetchone()
    if m_count != rows["masks"] or (m_count and m_hi != rows["masks"] - 1):
        out.append(Finding(DAMAGE, where, f"{m_count} structure masks point to mask rows up to {m_hi}, but "
                                          f"{rows['masks']} mask rows are committed"))
    queries = {
        "structure masks of slices that are not in the slices table":
            "SELECT COUNT(*) FROM slice_masks WHERE row NOT IN (SELECT row FROM slices)",
        "slices of series that are not in the series table":
            "SELECT COUNT(*) FROM slices WHERE series_uid NOT IN (SELECT series_uid FROM series)",
        "series of patients that are not in the patients table":
            "SELECT COUNT(*) FROM series WHERE patient_id NOT IN (SELECT patient_id FROM patients)",
        "series whose slice count differs from the slices stored for them":
            "SELECT COUNT(*) FROM series s WHERE n_slices != (SELECT COUNT(*) FROM slices WHERE series_uid = "
            "s.series_uid)"}
    if old:
        queries["rows both live and superseded"] = "SELECT COUNT(*) FROM slices WHERE row IN (SELECT row FROM superseded)"
    for what, sql in queries.items():
        n = con.execute(sql).fetchone()[0]
        if n:
            out.append(Finding(DAMAGE, where, f"{n} {what}"))
    return out


def check_incomplete(archive, con: sqlite3.Connection) -> list[Finding]:
    """One finding per series recorded as incomplete (:mod:`medhash.store.series`): nothing here can
    complete it; ingesting or sending the whole series again does."""
    return [Finding(INCOMPLETE, CATALOG, f"series {s['series_uid']} of patient {s['patient_id']} is incomplete: "
                    f"{s['present']} of {s['expected']} instances ({'; '.join(s['missing'])}); ingest or send the whole "
                    "series again to complete it") for s in incomplete_series(con)]


# ---------------------------------------------------------------------- the arrays
def check_arrays(archive, con: sqlite3.Connection) -> list[Finding]:
    """Each array file against its committed rows: missing rows (damage), a tail past them (leftover)."""
    out = []
    rows = committed_rows(con)
    for name, (fname, dtype, width) in _ARRAYS.items():
        path = arrays_dir(archive) / fname
        if not path.is_file() and rows[name] == 0:
            continue
        f = tail_finding(archive, path, rows[name] * width * np.dtype(dtype).itemsize,
                         f"{rows[name]} committed rows")
        if f is not None:
            out.append(f)
    return out


def check_dose_values(archive, con: sqlite3.Connection) -> list[Finding]:
    """Dose is finite and non-negative on every committed row (read :data:`DOSE_CHUNK_ROWS` rows at a time);
    rows without dose hold zeros."""
    fname, dtype, width = _ARRAYS["dose"]
    n = committed_rows(con)["dose"]
    path = arrays_dir(archive) / fname
    if n == 0 or not path.is_file() or path.stat().st_size < n * width * 4:
        return []   # a short file is reported by check_arrays
    dose = np.memmap(path, dtype=dtype, mode="r", shape=(n, width))
    has = np.zeros(n, dtype=bool)
    for row, flag in con.execute("SELECT row, has_dose FROM slices WHERE row < ?", (n,)):
        has[row] = bool(flag)
    has[superseded_rows(con, n)] = True   # rows completed series superseded keep what they held
    bad, stray = [], []
    for start in range(0, n, DOSE_CHUNK_ROWS):
        block = np.asarray(dose[start:start + DOSE_CHUNK_ROWS])
        ok = np.isfinite(block).all(axis=1) & (np.nan_to_num(block, nan=-1.0) >= 0).all(axis=1)
        bad += (start + np.flatnonzero(~ok)).tolist()
        stray += (start + np.flatnonzero(~has[start:start + len(block)] & block.any(axis=1))).tolist()
    out = []
    if bad:
        out.append(Finding(DAMAGE, f"arrays/{fname}", f"{len(bad)} slices hold dose that is not finite or negative "
                                                      f"({_rows_named(con, bad)}); ingest those series again into a "
                                                      "new archive"))
    if stray:
        out.append(Finding(DAMAGE, f"arrays/{fname}", f"{len(stray)} slices without dose hold non-zero dose values "
                                                      f"({_rows_named(con, stray)})"))
    return out


def _rows_named(con: sqlite3.Connection, rows: list[int], most: int = 3) -> str:
    """``"DEMO001:10, DEMO001:11, ... and 5 more"``: the first archive rows by patient:slice_index."""
    names = []
    for row in rows[:most]:
        rec = con.execute("SELECT patient_id, slice_index FROM slices WHERE row = ?", (int(row),)).fetchone()
        names.append(f"{rec[0]}:{rec[1]}" if rec else f"row {row}")
    more = f" and {len(rows) - most} more" if len(rows) > most else ""
    return ", ".join(names) + more


# ---------------------------------------------------------------------- leftovers of the atomic writers
def check_temporaries(archive) -> list[Finding]:
    """Temporary files of :func:`~medhash.store.durable.replace_atomically` (``.NAME.*.tmp``) and folders of
    :func:`~medhash.store.durable.replace_dir_atomically` (``.NAME.tmp-*``, ``.NAME.old-*``) left by a
    killed writer, in the archive's own folders (not the spool)."""
    roots = [archive_dir(archive), arrays_dir(archive), models_dir(archive), features_dir(archive),
             indexes_dir(archive), dose_models_dir(archive)]
    roots += [d for r in (models_dir(archive), indexes_dir(archive), dose_models_dir(archive)) if r.is_dir()
              for d in sorted(r.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir()):
            if not p.name.startswith("."):
                continue
            if p.is_file() and p.name.endswith(".tmp"):
                what = "a temporary file of an interrupted atomic write"
            elif p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
                what = "a folder of an interrupted atomic replacement of a folder"
            else:
                continue
            out.append(Finding(LEFTOVER, relative(archive, p), what, "remove it", remove_fix(p)))
    return out


# ---------------------------------------------------------------------- the spool
def listener_running(spool: Path) -> bool:
    """True when a listener holds the spool's lock (``spool/.lock``): tried once, never waited for."""
    lock = spool / _SPOOL_LOCK
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_spool(archive) -> list[Finding]:
    """What ``medhash listen`` left in ``ARCHIVE/spool`` while no listener runs: half-written files
    (``*.part``, never acknowledged: removed by repair), received files not yet ingested (the listener
    ingests them at its next start), files set aside as not ingestible (a note)."""
    spool = spool_dir(archive)
    if not spool.is_dir():
        return []
    if listener_running(spool):
        return [Finding(NOTE, relative(archive, spool), "a listener is receiving into this archive: the spool is "
                                                        "its working folder and was not checked")]
    out = []
    for folder in sorted(p for p in spool.iterdir() if p.is_dir() and p.name != _SPOOL_FAILED):
        files = sorted(f for f in folder.iterdir() if f.is_file())
        parts = [f for f in files if f.name.endswith(_SPOOL_PART)]
        for f in parts:
            out.append(Finding(LEFTOVER, relative(archive, f), "a file half received when the listener stopped "
                                                               "(never acknowledged to the sender)",
                               "remove it", remove_fix(f)))
        kept = len(files) - len(parts)
        if kept:
            out.append(Finding(LEFTOVER, relative(archive, folder),
                               f"{kept} received file(s) not yet ingested (acknowledged to the sender): start "
                               "medhash listen on this archive, which ingests what is left at start"))
        elif not parts:
            out.append(Finding(LEFTOVER, relative(archive, folder), "an empty spool folder", "remove it",
                               remove_fix(folder)))
    failed = spool / _SPOOL_FAILED
    if failed.is_dir():
        n = sum(1 for f in failed.rglob("*") if f.is_file() and f.name != "problems.txt")
        if n:
            out.append(Finding(NOTE, relative(archive, failed), f"{n} received file(s) set aside as not ingestible; "
                                                                "each folder's problems.txt says why"))
    return out


def check_store(archive) -> list[Finding]:
    """Every check of this module on an archive folder (a path or an :class:`~medhash.store.Archive`).

    Raises
    ------
    ArchiveError : the folder holds no catalog.
    """
    con = open_catalog(archive)
    try:
        out = check_catalog(archive, con)
        if not (out and out[0].what.startswith(("SQLite", "archive format"))):
            out += check_arrays(archive, con)
            out += check_dose_values(archive, con)
            out += check_incomplete(archive, con)
    except sqlite3.Error as exc:   # integrity_check passed, but a table or meta row is not what medhash wrote
        out = [Finding(DAMAGE, CATALOG, f"the catalog cannot be read as a medhash catalog ({exc}); restore it "
                                        "from a backup")]
    finally:
        con.close()
    return out + check_temporaries(archive) + check_spool(archive)


def catalog_rows(archive) -> int:
    """Committed slice rows of the archive (0 when its catalog cannot say)."""
    try:
        con = open_catalog(archive)
    except ArchiveError:
        return 0
    try:
        return committed_rows(con)["ct"]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def catalog_superseded(archive) -> np.ndarray:
    """Sorted int64 archive rows that completed series superseded (empty when the catalog cannot say)."""
    try:
        con = open_catalog(archive)
    except ArchiveError:
        return np.zeros(0, dtype=np.int64)
    try:
        return superseded_rows(con, committed_rows(con)["ct"])
    except sqlite3.Error:
        return np.zeros(0, dtype=np.int64)
    finally:
        con.close()


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(data, None) of a JSON object file, or (None, why it cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"cannot be read ({exc})"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not an object"
    return data, None
