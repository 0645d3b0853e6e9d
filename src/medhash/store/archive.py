"""The archive: a directory with a SQLite catalog and append-only slice arrays on the model grid.

Layout::

    ARCHIVE/
      catalog.sqlite      patients · series · slices · structures · slice_masks · meta · ingest_runs
      arrays/ct.i16       (n, 128, 128) int16, HU (rounded to 1 HU), row r = slices.row r
      arrays/dose.f32     (n, 128, 128) float32, Gy (0 where the slice has no dose)
      arrays/masks.bits   (m, 2048) uint8: one 128 x 128 mask per row, np.packbits of the C-order mask
      .lock               held by the one writer

Writes are atomic per series: the arrays are appended and flushed first, then the catalog rows
and the committed row counts are written in one SQLite transaction. The committed counts in
``meta`` are the truth: bytes past them (left by a killed ingest) are ignored by readers and cut
off by the next writer. So a crash leaves the archive as it was, plus whole series only.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ArchiveError, NotFoundError
from ..core.grid import GRID_SIZE, GRID_SPACING_MM, MIN_BODY_FRACTION, BODY_HU
from ..core.records import Slice, Volume
from . import series as series_rows
from .durable import append_rows, file_lock
from .layout import CATALOG, arrays_dir, catalog_path, lock_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PIX = GRID_SIZE * GRID_SIZE
_MASK_BYTES = _PIX // 8
_ARRAYS = {"ct": ("ct.i16", np.int16, _PIX), "dose": ("dose.f32", np.float32, _PIX),
           "masks": ("masks.bits", np.uint8, _MASK_BYTES)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    source_patient_id TEXT NOT NULL,
    source TEXT NOT NULL,
    ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    source TEXT NOT NULL,
    n_volume_slices INTEGER NOT NULL,
    n_slices INTEGER NOT NULL,
    n_skipped_no_body INTEGER NOT NULL,
    row_dir TEXT NOT NULL, col_dir TEXT NOT NULL,
    native_spacing TEXT NOT NULL,
    has_dose INTEGER NOT NULL,
    info TEXT NOT NULL,
    ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slices (
    row INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    slice_index INTEGER NOT NULL,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    z_mm REAL NOT NULL,
    origin_x REAL NOT NULL, origin_y REAL NOT NULL, origin_z REAL NOT NULL,
    has_dose INTEGER NOT NULL,
    body_fraction REAL NOT NULL,
    UNIQUE (patient_id, slice_index));
CREATE TABLE IF NOT EXISTS structures (
    structure_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slice_masks (
    row INTEGER NOT NULL REFERENCES slices(row),
    structure_id INTEGER NOT NULL REFERENCES structures(structure_id),
    mask_row INTEGER NOT NULL,
    pixels INTEGER NOT NULL,
    PRIMARY KEY (row, structure_id));
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL, finished_at REAL,
    series_added INTEGER, slices_added INTEGER, slices_skipped_no_body INTEGER,
    errors INTEGER, warnings INTEGER);
"""


@dataclass(frozen=True)
class AddResult:
    """What :meth:`Archive.add_volume` did with one volume."""

    series_uid: str
    patient_id: str
    added: bool
    slices: int
    skipped_no_body: int
    completed: bool = False
    """The series was in the archive, incomplete, and this volume replaced its slices
    (:mod:`medhash.store.series`)."""


class Archive:
    """A medhash archive directory (see the module docstring for the layout).

    Parameters
    ----------
    path : the archive directory.
    create : create an empty archive when ``path`` holds none (else :class:`ArchiveError`).
    read_only : open for reading only (the web server): the catalog connection refuses writes
        (SQLite ``query_only``) and every writing method raises :class:`ArchiveError`.
    lock_wait_s : how long a write waits for another process's write to this archive to end
        (default 0: it fails at once with :class:`ArchiveError`). A write holds the lock for one
        series (tens of milliseconds); ``medhash listen``'s ingest processes wait for each other.

    Examples
    --------
    >>> arch = Archive("demo-archive")                      # doctest: +SKIP
    >>> len(arch), arch.get("DEMO001", 10).ct.shape        # doctest: +SKIP
    (240, (128, 128))
    """

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool = False,
                 lock_wait_s: float = 0.0) -> None:
        self.path = Path(path)
        self.read_only = bool(read_only)
        self.lock_wait_s = float(lock_wait_s)
        if read_only and create:
            raise ValueError("an archive cannot be created read-only")
        catalog = catalog_path(self.path)
        if not catalog.is_file():
            if not create:
                raise ArchiveError(f"{self.path}: not a medhash archive (no {CATALOG}); create one by ingesting "
                                   "data into it", param="archive")
            if self.path.exists() and not self.path.is_dir():
                raise ArchiveError(f"{self.path}: exists and is not a directory", param="archive")
            arrays_dir(self.path).mkdir(parents=True, exist_ok=True)
        try:
            self._con = sqlite3.connect(catalog, isolation_level=None, check_same_thread=False)
            if read_only:
                self._con.execute("PRAGMA query_only = ON")
                version = self._meta("format_version")
                if version is None or int(version) != FORMAT_VERSION:
                    raise ArchiveError(f"{self.path}: archive format {version}, this medhash reads format "
                                       f"{FORMAT_VERSION}")
                self._maps, self._table = {}, None
                return
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(_SCHEMA + series_rows.SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"{catalog}: cannot open the catalog ({exc})") from None
        version = self._meta("format_version")
        if version is None:
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('grid', ?)", (json.dumps(
                {"size": GRID_SIZE, "spacing_mm": GRID_SPACING_MM, "body_hu": BODY_HU,
                 "min_body_fraction": MIN_BODY_FRACTION}),))
        elif int(version) != FORMAT_VERSION:
            raise ArchiveError(f"{self.path}: archive format {version}, this medhash reads format {FORMAT_VERSION}")
        self._maps: dict[str, tuple[int, np.ndarray]] = {}
        self._table: tuple[int, dict] | None = None

    # ---------------------------------------------------------------- catalog helpers
    def _meta(self, key: str) -> str | None:
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _count(self, name: str) -> int:
        """Committed rows of array ``name``."""
        return int(self._meta(f"rows_{name}") or 0)

    def close(self) -> None:
        self._maps.clear()
        self._con.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- arrays
    def _array(self, name: str) -> np.ndarray:
        """Memory-mapped committed rows of an array: (n, 128, 128) or (m, 2048)."""
        n = self._count(name)
        cached = self._maps.get(name)
        if cached is not None and cached[0] == n:
            return cached[1]
        fname, dtype, width = _ARRAYS[name]
        shape = (n, GRID_SIZE, GRID_SIZE) if width == _PIX else (n, width)
        if n == 0:
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = np.memmap(arrays_dir(self.path) / fname, dtype=dtype, mode="r", shape=shape)
        self._maps[name] = (n, arr)
        return arr

    @property
    def ct(self) -> np.ndarray:
        """(n, 128, 128) int16 HU of every slice, memory-mapped, in row order."""
        return self._array("ct")

    @property
    def dose(self) -> np.ndarray:
        """(n, 128, 128) float32 Gy of every slice (zeros where ``has_dose`` is false), memory-mapped."""
        return self._array("dose")

    # ---------------------------------------------------------------- writing
    def check_writable(self) -> None:
        """Raise :class:`ArchiveError` when the archive was opened read-only."""
        if self.read_only:
            raise ArchiveError(f"{self.path}: opened read-only; it cannot be changed from here")

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Hold the archive's writer lock (``lock_wait_s``, then :class:`ArchiveError`)."""
        self.check_writable()
        busy = f"{self.path}: another medhash process is writing to this archive; wait for it to finish"
        with file_lock(lock_path(self.path), wait_s=self.lock_wait_s, busy=busy):
            yield

    def _append(self, name: str, data: np.ndarray) -> None:
        """Append rows after the committed ones, cutting off anything a killed writer left."""
        fname, dtype, width = _ARRAYS[name]
        append_rows(arrays_dir(self.path) / fname, self._count(name) * width * np.dtype(dtype).itemsize,
                    np.asarray(data, dtype=dtype))

    def series_uids(self) -> set[str]:
        """SeriesInstanceUIDs (``openkbp:<pid>`` for OpenKBP) already in the archive."""
        return {r[0] for r in self._con.execute("SELECT series_uid FROM series")}

    def _patient_id_for(self, vol: Volume) -> str:
        """The archive patient id: the source id, ``ID.2``, ``ID.3``… for a patient's later series."""
        n = self._con.execute("SELECT COUNT(*) FROM series s JOIN patients p USING (patient_id) "
                              "WHERE p.source_patient_id = ?", (vol.patient_id,)).fetchone()[0]
        if n == 0 and self._con.execute("SELECT 1 FROM patients WHERE patient_id = ?",
                                        (vol.patient_id,)).fetchone() is None:
            return vol.patient_id
        k = n + 1
        while self._con.execute("SELECT 1 FROM patients WHERE patient_id = ?",
                                (f"{vol.patient_id}.{k}",)).fetchone():
            k += 1
        return f"{vol.patient_id}.{k}"

    def add_volume(self, vol: Volume) -> AddResult:
        """Add one series (its slices with body) atomically; a series already present adds nothing,
        unless ``vol`` completes it (:func:`medhash.store.series.completes`): then its slices replace
        the stored ones (superseded, see :mod:`medhash.store.series`).

        The arrays are written first, the catalog last, in one transaction.

        Raises
        ------
        InputError
            Naming the series, when it holds a value the archive may not (NaN, inf, HU or Gy out of
            range: :meth:`Volume.check_values`); nothing is written. The last line of defence: the
            readers validate and clip first.
        """
        vol.check_values()
        vol = vol.body_only()
        with self._writer():
            old = series_rows.stored_series(self._con, vol.series_uid)
            if old is not None and not series_rows.completes(old["info"], vol.info):
                return AddResult(vol.series_uid, old["patient_id"], False, 0, 0)
            pid = old["patient_id"] if old is not None else self._patient_id_for(vol)
            n0, m0 = self._count("ct"), self._count("masks")
            n = len(vol)
            # -- arrays first
            ct = np.clip(np.rint(vol.ct), -32768, 32767).astype(np.int16)
            dose = vol.dose if vol.dose is not None else np.zeros((n, GRID_SIZE, GRID_SIZE), np.float32)
            mask_rows, mask_refs = [], []
            for name in sorted(vol.masks):
                m = vol.masks[name]
                for k in np.flatnonzero(m.reshape(n, -1).any(axis=1)):
                    mask_refs.append((int(k), name, m0 + len(mask_rows), int(m[k].sum())))
                    mask_rows.append(np.packbits(m[k].ravel()))
            if n:
                self._append("ct", ct)
                self._append("dose", dose)
            if mask_rows:
                self._append("masks", np.stack(mask_rows))
            # -- then the catalog, in one transaction
            now = time.time()
            con = self._con
            try:
                con.execute("BEGIN IMMEDIATE")
                if old is not None:
                    series_rows.supersede(con, vol.series_uid, now)
                elif pid != vol.patient_id or con.execute("SELECT 1 FROM patients WHERE patient_id = ?",
                                                          (pid,)).fetchone() is None:
                    con.execute("INSERT INTO patients VALUES (?, ?, ?, ?)", (pid, vol.patient_id, vol.source, now))
                series_rows.insert_series(con, vol, pid, n0, mask_refs, now, replace=old is not None)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('rows_ct', ?)", (str(n0 + n),))
                con.execute("INSERT OR REPLACE INTO meta VALUES ('rows_dose', ?)", (str(n0 + n),))
                con.execute("INSERT OR REPLACE INTO meta VALUES ('rows_masks', ?)", (str(m0 + len(mask_rows)),))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return AddResult(vol.series_uid, pid, True, n, vol.skipped_no_body, completed=old is not None)

    def record_run(self, started_at: float, series_added: int, slices_added: int, skipped: int,
                   errors: int, warnings: int) -> None:
        """Log one ingest run (counts only: no paths, no names)."""
        self.check_writable()
        self._con.execute("INSERT INTO ingest_runs (started_at, finished_at, series_added, slices_added, "
                          "slices_skipped_no_body, errors, warnings) VALUES (?,?,?,?,?,?,?)",
                          (started_at, time.time(), series_added, slices_added, skipped, errors, warnings))

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        """Rows of the arrays, superseded ones included (:meth:`table` tells them apart)."""
        return self._count("ct")

    def __getitem__(self, row: int) -> Slice:
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"slice row {row} is out of range for an archive of {n} slices")
        row = row % n
        rec = self._con.execute("SELECT * FROM slices WHERE row = ?", (row,)).fetchone()
        if rec is None:
            raise NotFoundError(f"slice row {row} of {self.path} was superseded when its series was completed; "
                                "search again (an index built before holds such rows until it is updated)")
        return self._slice(rec)

    def get(self, patient_id: str, slice_index: int) -> Slice:
        """The slice named (patient_id, slice_index); NotFoundError says what exists instead."""
        rec = self._con.execute("SELECT * FROM slices WHERE patient_id = ? AND slice_index = ?",
                                (patient_id, int(slice_index))).fetchone()
        if rec is None:
            rng = self._con.execute("SELECT MIN(slice_index), MAX(slice_index), COUNT(*) FROM slices "
                                    "WHERE patient_id = ?", (patient_id,)).fetchone()
            if rng[2] == 0:
                raise NotFoundError(f"patient {patient_id!r} is not in the archive {self.path}")
            raise NotFoundError(f"slice ({patient_id}, {slice_index}) is not in the archive: patient {patient_id} "
                                f"has {rng[2]} slices with body, slice_index {rng[0]} to {rng[1]}")
        return self._slice(rec)

    def slices(self, patient_id: str) -> list[Slice]:
        """All slices of a patient, in position order."""
        recs = self._con.execute("SELECT * FROM slices WHERE patient_id = ? ORDER BY slice_index",
                                 (patient_id,)).fetchall()
        if not recs:
            raise NotFoundError(f"patient {patient_id!r} is not in the archive {self.path}")
        return [self._slice(r) for r in recs]

    def patients(self) -> list[str]:
        """Archive patient ids, sorted."""
        return [r[0] for r in self._con.execute("SELECT patient_id FROM patients ORDER BY patient_id")]

    IDENTITY_KEYS = ("series_uid", "study_uid", "frame_of_reference_uid", "patient_id")
    """What :meth:`identify` compares, strongest first."""

    def identify(self, *, patient_id: str | None = None, study_uid: str | None = None, frame_uid: str | None = None,
                 series_uid: str | None = None) -> list[dict]:
        """The archive patients a DICOM series with these identifiers belongs to.

        Parameters
        ----------
        patient_id : the series' PatientID, compared with the source patient id of each archive
            patient (``patients.source_patient_id``: the pseudonym when the archive was pseudonymised).
        study_uid, frame_uid : StudyInstanceUID, FrameOfReferenceUID, compared with those ingest kept
            of each archive series.
        series_uid : SeriesInstanceUID, compared with each archive series' uid.
            Empty or None identifiers match nothing.

        Returns
        -------
        list of ``{"patient_id", "matched_on"}``: every archive patient one identifier matches, with
        what matched (a sublist of :data:`IDENTITY_KEYS`, in that order), the strongest match first
        (ties by patient id); empty when nothing matches.
        """
        given = [v if v else None for v in (series_uid, study_uid, frame_uid, patient_id)]
        if not any(given):
            return []
        cols = ("s.series_uid", "json_extract(s.info, '$.study_uid')",
                "json_extract(s.info, '$.frame_of_reference_uid')", "p.source_patient_id")
        hit = ", ".join(f"COALESCE({c} = ?, 0)" for c in cols)
        where = " OR ".join(f"{c} = ?" for c in cols)
        found: dict[str, set[int]] = {}
        for pid, *flags in self._con.execute(
                f"SELECT s.patient_id, {hit} FROM series s JOIN patients p USING (patient_id) WHERE {where}",
                given + given):
            found.setdefault(pid, set()).update(j for j, f in enumerate(flags) if f)
        order = sorted(found, key=lambda p: (min(found[p]), -len(found[p]), p))
        return [{"patient_id": p, "matched_on": [self.IDENTITY_KEYS[j] for j in sorted(found[p])]} for p in order]

    def table(self) -> dict[str, np.ndarray]:
        """The slice catalog as columns, position k = archive row k: row, patient_id, slice_index, z_mm,
        has_dose, live.

        ``live`` is False on the rows a completed series superseded (:mod:`medhash.store.series`):
        there patient_id is ``""``, slice_index -1, z_mm NaN and has_dose False, so that a selection by
        patient or by dose never picks them; code that takes every row takes ``row[live]``. Cached until
        the archive grows; treat the arrays as read-only.
        """
        n = len(self)
        if self._table is not None and self._table[0] == n:
            return self._table[1]
        recs = self._con.execute("SELECT row, patient_id, slice_index, z_mm, has_dose FROM slices "
                                 "WHERE row < ? ORDER BY row", (n,)).fetchall()
        table = {"row": np.arange(n, dtype=np.int64), "patient_id": np.full(n, "", dtype=object),
                 "slice_index": np.full(n, -1, dtype=np.int64), "z_mm": np.full(n, np.nan),
                 "has_dose": np.zeros(n, dtype=bool), "live": np.zeros(n, dtype=bool)}
        if recs:
            cols = list(zip(*recs))
            at = np.array(cols[0], dtype=np.int64)
            table["patient_id"][at] = cols[1]
            table["slice_index"][at] = cols[2]
            table["z_mm"][at] = cols[3]
            table["has_dose"][at] = np.array(cols[4], dtype=bool)
            table["live"][at] = True
        self._table = (n, table)
        return table

    def series_instances(self) -> dict[str, dict]:
        """SeriesInstanceUID -> what the archive holds of it (:func:`medhash.store.series.series_instances`):
        what ingest passes to the readers so that files completing a series are read again."""
        return series_rows.series_instances(self._con)

    def incomplete_series(self) -> list[dict]:
        """The series recorded as incomplete (:func:`medhash.store.series.incomplete_series`)."""
        return series_rows.incomplete_series(self._con)

    def superseded_rows(self) -> np.ndarray:
        """Sorted (k,) int64 archive rows superseded by completed series (no reader returns them)."""
        return series_rows.superseded_rows(self._con, len(self))

    def structure_sets(self) -> list[frozenset[str]]:
        """Per row, the names of the structures on the slice (organs and targets, not the
        possible-dose mask): the "organ set" used for relevance."""
        n = len(self)
        sets: list[set[str]] = [set() for _ in range(n)]
        for row, name in self._con.execute(
                "SELECT m.row, s.name FROM slice_masks m JOIN structures s USING (structure_id) "
                "WHERE s.kind = 'roi' AND m.row < ?", (n,)):
            sets[row].add(name)
        return [frozenset(x) for x in sets]

    def patient_summaries(self) -> list[dict]:
        """One summary per archive patient, sorted by id (``medhash patients --json``); never a name.

        Returns
        -------
        list of dict with keys ``patient_id`` (the archive id), ``slices`` (slices with body),
        ``slices_with_dose``, ``first_slice`` / ``last_slice`` (slice_index range, None without
        slices), ``series``, ``source`` (``dicom``, ``openkbp``, ...; several joined by ``+``),
        ``pseudonymised`` (bool: the series were recorded as pseudonymised, or the id has the form
        ``P`` + 16 hex digits that ``--pseudonymise`` writes), ``has_dose`` (bool), ``structures``
        (count of distinct contoured structures on its slices: body, organs, targets; not the
        possible-dose mask) and ``ingested_at`` (Unix
        time, s, of its first series).
        """
        n = len(self)
        out: dict[str, dict] = {}
        for pid, spid, ingested in self._con.execute(
                "SELECT patient_id, source_patient_id, ingested_at FROM patients ORDER BY patient_id"):
            out[pid] = {"patient_id": pid, "slices": 0, "slices_with_dose": 0, "first_slice": None,
                        "last_slice": None, "series": 0, "source": "", "pseudonymised": _looks_pseudonymised(spid),
                        "has_dose": False, "structures": 0, "ingested_at": float(ingested)}
        sources: dict[str, set[str]] = {}
        for pid, source, info in self._con.execute("SELECT patient_id, source, info FROM series"):
            if pid in out:
                out[pid]["series"] += 1
                sources.setdefault(pid, set()).add(source)
                out[pid]["pseudonymised"] |= bool(json.loads(info or "{}").get("pseudonymised"))
        for pid, cnt, dosed, lo, hi in self._con.execute(
                "SELECT patient_id, COUNT(*), SUM(has_dose), MIN(slice_index), MAX(slice_index) FROM slices "
                "WHERE row < ? GROUP BY patient_id", (n,)):
            if pid in out:
                out[pid].update(slices=int(cnt), slices_with_dose=int(dosed or 0), has_dose=bool(dosed),
                                first_slice=int(lo), last_slice=int(hi))
        for pid, cnt in self._con.execute(
                "SELECT sl.patient_id, COUNT(DISTINCT m.structure_id) FROM slice_masks m "
                "JOIN structures s USING (structure_id) JOIN slices sl ON sl.row = m.row "
                "WHERE s.kind = 'roi' AND m.row < ? GROUP BY sl.patient_id", (n,)):
            if pid in out:
                out[pid]["structures"] = int(cnt)
        for pid, names in sources.items():
            out[pid]["source"] = "+".join(sorted(names))
        return list(out.values())

    def possible_dose_masks(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """OpenKBP possible-dose masks of archive rows.

        Returns
        -------
        masks : (len(rows), 128, 128) bool, all False where a row has none.
        present : (len(rows),) bool, True where the row has a possible-dose mask.
        """
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        masks = np.zeros((len(rows), GRID_SIZE, GRID_SIZE), dtype=bool)
        present = np.zeros(len(rows), dtype=bool)
        if not len(rows):
            return masks, present
        where = {}
        for row, mrow in self._con.execute(
                "SELECT m.row, m.mask_row FROM slice_masks m JOIN structures s USING (structure_id) "
                "WHERE s.kind = 'possible_dose'"):
            where[int(row)] = int(mrow)
        bits = self._array("masks")
        for j, row in enumerate(rows):
            mrow = where.get(int(row))
            if mrow is not None:
                masks[j] = np.unpackbits(bits[mrow]).astype(bool).reshape(GRID_SIZE, GRID_SIZE)
                present[j] = True
        return masks, present

    def structure_masks(self, rows) -> dict[str, np.ndarray]:
        """The structure masks of archive rows (organs and targets, not the possible-dose mask).

        Returns name -> (len(rows), 128, 128) bool, all False on the rows a structure does not touch."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        pos = {int(r): j for j, r in enumerate(rows)}
        out: dict[str, np.ndarray] = {}
        bits = self._array("masks")
        for row, name, mrow in self._con.execute(
                "SELECT m.row, s.name, m.mask_row FROM slice_masks m JOIN structures s USING (structure_id) "
                "WHERE s.kind = 'roi' AND m.row BETWEEN ? AND ?",
                (int(rows.min(initial=0)), int(rows.max(initial=-1)))):
            j = pos.get(int(row))
            if j is not None:
                mask = np.unpackbits(bits[mrow]).astype(bool).reshape(GRID_SIZE, GRID_SIZE)
                out.setdefault(name, np.zeros((len(rows), GRID_SIZE, GRID_SIZE), dtype=bool))[j] = mask
        return out

    def _slice(self, rec: tuple) -> Slice:
        row, pid, sidx, suid, z, ox, oy, oz, has_dose, _bf = rec
        series = self._con.execute("SELECT row_dir, col_dir FROM series WHERE series_uid = ?", (suid,)).fetchone()
        masks, pdm = {}, None
        bits = self._array("masks")
        for name, kind, mrow in self._con.execute(
                "SELECT s.name, s.kind, m.mask_row FROM slice_masks m JOIN structures s USING (structure_id) "
                "WHERE m.row = ? ORDER BY s.name", (row,)):
            mask = np.unpackbits(bits[mrow]).astype(bool).reshape(GRID_SIZE, GRID_SIZE)
            if kind == "possible_dose":
                pdm = mask
            else:
                masks[name] = mask
        return Slice(patient_id=pid, slice_index=int(sidx), row=int(row), series_uid=suid, z_mm=float(z),
                     origin_mm=np.array([ox, oy, oz]), row_dir=np.array(json.loads(series[0])),
                     col_dir=np.array(json.loads(series[1])), ct=np.asarray(self.ct[row], dtype=np.float32),
                     dose=np.array(self.dose[row]) if has_dose else None, masks=masks, possible_dose_mask=pdm)

    # ---------------------------------------------------------------- summary
    def info(self) -> dict:
        """Summary of the archive as JSON-ready data (``medhash info --json``).

        Keys: ``archive``, ``format_version``, ``patients``, ``series``, ``slices`` (live slices),
        ``superseded_slices`` (rows completed series replaced), ``incomplete_series``
        (:meth:`incomplete_series`), ``slices_with_dose``, ``structures`` (name -> slices that show it), ``possible_dose_mask_slices``,
        ``skipped`` (reason -> slices), ``sources`` (source -> series), ``size_bytes``, ``grid``,
        ``ingest_runs``.
        """
        q = lambda sql, *a: self._con.execute(sql, a).fetchone()[0]  # noqa: E731
        n = len(self)
        structures = {name: cnt for name, cnt in self._con.execute(
            "SELECT s.name, COUNT(*) FROM slice_masks m JOIN structures s USING (structure_id) "
            "WHERE s.kind = 'roi' AND m.row < ? GROUP BY s.name ORDER BY s.name", (n,))}
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "archive": str(self.path),
            "format_version": FORMAT_VERSION,
            "patients": int(q("SELECT COUNT(*) FROM patients")),
            "series": int(q("SELECT COUNT(*) FROM series")),
            "slices": int(q("SELECT COUNT(*) FROM slices WHERE row < ?", n)),
            "superseded_slices": int(len(self.superseded_rows())),
            "incomplete_series": self.incomplete_series(),
            "slices_with_dose": int(q("SELECT COUNT(*) FROM slices WHERE has_dose = 1 AND row < ?", n)),
            "structures": structures,
            "possible_dose_mask_slices": int(q(
                "SELECT COUNT(*) FROM slice_masks m JOIN structures s USING (structure_id) "
                "WHERE s.kind = 'possible_dose' AND m.row < ?", n)),
            "skipped": {"no_body": int(q("SELECT COALESCE(SUM(n_skipped_no_body), 0) FROM series"))},
            "sources": {src: cnt for src, cnt in self._con.execute(
                "SELECT source, COUNT(*) FROM series GROUP BY source ORDER BY source")},
            "size_bytes": int(size),
            "grid": json.loads(self._meta("grid") or "{}"),
            "ingest_runs": int(q("SELECT COUNT(*) FROM ingest_runs")),
        }


_PSEUDONYM = re.compile(r"P[0-9a-f]{16}")


def _looks_pseudonymised(source_patient_id: str) -> bool:
    """True for an id of the form ``--pseudonymise`` writes: ``P`` + 16 lower-case hex digits."""
    return bool(_PSEUDONYM.fullmatch(str(source_patient_id)))
