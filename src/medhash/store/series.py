"""The catalog rows of one series: writing a new series, completing one (its slices superseded by a
read of all its instances), and what the catalog knows of each series' instances.

A series is *incomplete* when the evidence of its own files (:mod:`medhash.io.dicom.completeness`)
says that instances are missing: ``series.info["instances"]`` records ``present``, ``expected``,
``missing`` (the evidence, in words) and the SOPInstanceUIDs stored. A later ingest that holds every
instance stored and more (or the RTDOSE or RTSTRUCT the series lacks) *completes* it: the series is read
again from all its files, so its slices are recomputed on the grid the whole series gives; the new
slices are appended and, in the same transaction, the old rows leave the ``slices`` and
``slice_masks`` tables for ``superseded`` and ``superseded_masks``. The arrays stay append-only (the
superseded rows keep their bytes, which no reader returns again), so a crash at any moment leaves either
the old series or the completed one. Indexes built before then hold superseded rows: searches skip them
and the next index update drops them (:mod:`medhash.retrieval.build`).
"""
from __future__ import annotations

import json
import sqlite3

import numpy as np

from ..core.grid import BODY_HU
from ..core.records import POSSIBLE_DOSE_MASK, Volume

SCHEMA = """
CREATE TABLE IF NOT EXISTS superseded (
    row INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    slice_index INTEGER NOT NULL,
    superseded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS superseded_masks (mask_row INTEGER PRIMARY KEY);
"""
"""Tables of the rows that completed series left behind (created when an archive is opened for writing)."""


def has_table(con: sqlite3.Connection, name: str) -> bool:
    """True when the catalog has table ``name`` (archives written before it existed lack it)."""
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def stored_series(con: sqlite3.Connection, series_uid: str) -> dict | None:
    """``{"patient_id", "info"}`` of a stored series, or None."""
    row = con.execute("SELECT patient_id, info FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
    return None if row is None else {"patient_id": row[0], "info": json.loads(row[1] or "{}")}


def completes(stored_info: dict, new_info: dict) -> bool:
    """True when a new read of a series (its ``info``) completes the stored one: both record their
    instances, the new read holds every instance stored, and it holds more, or it brings the RTDOSE or
    the RTSTRUCT the stored series lacks. A series stored before instances were recorded is never
    completed (its stored instances are unknown)."""
    old_i, new_i = stored_info.get("instances"), new_info.get("instances")
    if not old_i or not new_i:
        return False
    old_s, new_s = set(old_i.get("sop_uids", ())), set(new_i.get("sop_uids", ()))
    if not old_s <= new_s:
        return False
    if new_s > old_s:
        return True
    return ("dose" in new_info and "dose" not in stored_info) or \
        ("structure_set" in new_info and "structure_set" not in stored_info)


def series_instances(con: sqlite3.Connection) -> dict[str, dict]:
    """SeriesInstanceUID -> ``{"sop_uids": list or None (not recorded), "expected": int, "dose": bool,
    "structures": bool}`` of every stored series (what a reader needs to tell whether files complete it)."""
    out = {}
    for uid, info, has_dose in con.execute("SELECT series_uid, info, has_dose FROM series"):
        info = json.loads(info or "{}")
        inst = info.get("instances") or {}
        out[uid] = {"sop_uids": inst.get("sop_uids"), "expected": int(inst.get("expected", 0) or 0),
                    "dose": bool(has_dose), "structures": "structure_set" in info}
    return out


def incomplete_series(con: sqlite3.Connection) -> list[dict]:
    """The series recorded as incomplete: ``{"series_uid", "patient_id", "present", "expected", "missing"}``
    each, by patient id then UID."""
    out = []
    for uid, pid, info in con.execute("SELECT series_uid, patient_id, info FROM series ORDER BY patient_id, "
                                      "series_uid"):
        inst = json.loads(info or "{}").get("instances") or {}
        if inst and not inst.get("complete", True):
            out.append({"series_uid": uid, "patient_id": pid, "present": int(inst["present"]),
                        "expected": int(inst["expected"]), "missing": list(inst.get("missing", []))})
    return out


def supersede(con: sqlite3.Connection, series_uid: str, now: float) -> tuple[int, int]:
    """Move the slices and masks of ``series_uid`` out of the live tables (inside the caller's
    transaction); returns (slice rows, mask rows) superseded."""
    con.execute("INSERT INTO superseded SELECT row, series_uid, patient_id, slice_index, ? FROM slices "
                "WHERE series_uid = ?", (now, series_uid))
    con.execute("INSERT INTO superseded_masks SELECT mask_row FROM slice_masks WHERE row IN "
                "(SELECT row FROM slices WHERE series_uid = ?)", (series_uid,))
    masks = con.execute("DELETE FROM slice_masks WHERE row IN (SELECT row FROM slices WHERE series_uid = ?)",
                        (series_uid,)).rowcount
    rows = con.execute("DELETE FROM slices WHERE series_uid = ?", (series_uid,)).rowcount
    return rows, masks


def insert_series(con: sqlite3.Connection, vol: Volume, pid: str, n0: int, mask_refs: list[tuple], now: float,
                  replace: bool) -> None:
    """The catalog rows of volume ``vol`` (slices with body only) as series of patient ``pid``, its slices
    at rows ``n0 ...`` and its masks ``mask_refs`` ((slice k, structure name, mask row, pixels) each);
    ``replace``: the series row exists (a completion) and is updated. Inside the caller's transaction."""
    n = len(vol)
    values = (pid, vol.source, len(vol) + vol.skipped_no_body, n, vol.skipped_no_body,
              json.dumps(np.round(vol.row_dir, 6).tolist()), json.dumps(np.round(vol.col_dir, 6).tolist()),
              json.dumps([round(float(s), 6) for s in vol.native_spacing]), int(vol.dose is not None),
              json.dumps(vol.info, default=_json_default), now)
    if replace:
        con.execute("UPDATE series SET patient_id = ?, source = ?, n_volume_slices = ?, n_slices = ?, "
                    "n_skipped_no_body = ?, row_dir = ?, col_dir = ?, native_spacing = ?, has_dose = ?, info = ?, "
                    "ingested_at = ? WHERE series_uid = ?", (*values, vol.series_uid))
    else:
        con.execute("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (vol.series_uid, *values))
    bf = (vol.ct > BODY_HU).mean(axis=(1, 2)) if n else np.zeros(0)
    con.executemany("INSERT INTO slices VALUES (?,?,?,?,?,?,?,?,?,?)", [
        (n0 + k, pid, int(vol.slice_index[k]), vol.series_uid, float(vol.z_mm[k]),
         *map(float, vol.origins_mm[k]), int(vol.dose is not None), float(bf[k])) for k in range(n)])
    ids = {}
    for name in vol.masks:
        kind = "possible_dose" if name == POSSIBLE_DOSE_MASK else "roi"
        con.execute("INSERT OR IGNORE INTO structures (name, kind) VALUES (?, ?)", (name, kind))
        ids[name] = con.execute("SELECT structure_id FROM structures WHERE name = ?", (name,)).fetchone()[0]
    con.executemany("INSERT INTO slice_masks VALUES (?,?,?,?)",
                    [(n0 + k, ids[name], mrow, px) for k, name, mrow, px in mask_refs])


def superseded_rows(con: sqlite3.Connection, below: int) -> np.ndarray:
    """Sorted (k,) int64 rows below ``below`` that completed series superseded (empty for older archives)."""
    if not has_table(con, "superseded"):
        return np.zeros(0, dtype=np.int64)
    rows = [r[0] for r in con.execute("SELECT row FROM superseded WHERE row < ? ORDER BY row", (below,))]
    return np.array(rows, dtype=np.int64)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
