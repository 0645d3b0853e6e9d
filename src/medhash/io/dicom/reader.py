"""Reading DICOM RT folders: headers grouped by kind, CT series matched with their RTDOSE and RTSTRUCT,
each series read onto the model grid (in forked worker processes); query slices are in :mod:`.query`.

Steps (each file's header is read first, without pixel data, to group):

1. Walk the folders; read headers (``stop_before_pixels``). Files without the ``DICM`` prefix are
   tried once more only if they start like a DICOM data set (group 0x0008), as some old RT exports
   do. Anything else is reported as "not DICOM".
2. Group CT slices by SeriesInstanceUID (:mod:`.ct` checks and orders each series).
3. RTDOSE matched by FrameOfReferenceUID (:mod:`.rtdose`): several for one frame of reference,
   the choice is recorded.
4. RTSTRUCT matched by FrameOfReferenceUID: contours rasterised on the model grid (:mod:`.rtstruct`).
5. Every file and every series is read in isolation: whatever goes wrong becomes a :class:`Problem`
   naming the file (and the element), never an exception that would cost another file. A damaged
   RTDOSE or RTSTRUCT is replaced by an intact copy of it (same SOPInstanceUID) when there is one.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ...core.grid import GRID_SIZE, GRID_SPACING_MM, place_grid, stack_to_grid
from ...core.records import Problem, Volume
from ...errors import InputError
from ...lifeline import die_with_parent
from .codec import (CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE, MEDIA_STORAGE_DIRECTORY, RT_DOSE_STORAGE,
                    RT_PLAN_STORAGE, RT_STRUCT_STORAGE, attach_pixel_data, describe, truncation, value_of)
from .completeness import instance_evidence
from .ct import CTSeries, read_ct_series
from .files import iter_files
from .rtdose import DoseGrid, choose_dose, read_dose
from .rtstruct import rasterise_structure_set


@dataclass
class DicomScan:
    """Headers of the DICOM files found under the sources, grouped by kind."""

    ct: dict[str, list[tuple[Path, pydicom.Dataset]]] = field(default_factory=lambda: defaultdict(list))
    dose: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    struct: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    plan: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    plans: int = 0
    files: int = 0
    not_dicom: int = 0
    other: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[Problem] = field(default_factory=list)
    pixel_offsets: dict[Path, int] = field(default_factory=dict)
    """Byte offset of the Pixel Data element of each file read (where the header stopped)."""


def _looks_like_dataset(path: Path) -> bool:
    """True when a file without preamble starts with a group-0x0008 tag (old RT exports)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] in (b"\x08\x00", b"\x00\x08")


def read_header(path: Path, offsets: dict[Path, int] | None = None) -> pydicom.Dataset:
    """The data set of ``path`` without pixel data; raises InputError when it is not DICOM.

    With ``offsets``, ``offsets[path]`` is set to the byte offset where the header stopped (the Pixel
    Data element, if the file has one), so that :func:`attach_pixel_data` can read it later without
    parsing the header again.
    """
    try:
        if offsets is None:
            return pydicom.dcmread(path, stop_before_pixels=True)
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            offsets[path] = fh.tell()
            return ds
    except InvalidDicomError:
        if not _looks_like_dataset(path):
            raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix at byte 128); skipped") from None
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types on garbage
            raise InputError(f"{path}: not a readable DICOM file ({exc}); skipped") from None
        if "SOPClassUID" not in ds:
            raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix, no SOP Class UID); skipped")
        return ds
    except Exception as exc:
        raise InputError(f"{path}: cannot read DICOM header ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or corrupt; skipped") from None


def scan(sources: Iterable[str | Path], progress: bool = False) -> DicomScan:
    """Read the headers of every file under ``sources`` and sort them by kind.

    Problems (unreadable files, unsupported objects) are collected in ``.problems``.
    """
    from tqdm import tqdm  # start-up: tqdm only when reading folders

    out = DicomScan()
    with _quiet():
        files = list(iter_files(sources, out.problems))
        for path in tqdm(files, desc="reading headers", unit="file", disable=not progress, leave=False):
            out.files += 1
            try:
                ds = read_header(path, out.pixel_offsets)
            except InputError as exc:
                out.not_dicom += 1
                out.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
                continue
            try:
                _sort_file(out, path, ds)
            except Exception as exc:  # a header element pydicom cannot convert
                message = str(exc).removeprefix(f"{path}: ") if isinstance(exc, InputError) else \
                    f"the header cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
                out.problems.append(Problem(str(path), f"{message}; the file may be corrupt; skipped"))
    return out


@contextlib.contextmanager
def _quiet():
    """pydicom's warnings about invalid values silenced (its validation while reading turned off, put back
    after): medhash reports what it cannot use itself."""
    mode = pydicom.config.settings.reading_validation_mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            yield
        finally:
            pydicom.config.settings.reading_validation_mode = mode


def _sort_file(out: DicomScan, path: Path, ds: pydicom.Dataset) -> None:
    """Put one header into ``out`` by its kind (a problem for what cannot be used)."""
    meta = getattr(ds, "file_meta", None)
    sop_class = str(value_of(ds, "SOPClassUID", path, "") or
                    (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    modality = str(value_of(ds, "Modality", path, "")).upper()
    if not sop_class and not modality:
        out.problems.append(Problem(str(path), f"neither {describe('SOPClassUID')} nor {describe('Modality')} "
                                    "is present; the file may be truncated or corrupt; skipped"))
        return
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return
    if sop_class == ENHANCED_CT_STORAGE:
        out.problems.append(Problem(str(path), "Enhanced CT (multi-frame) is not supported yet; "
                                    "export the series as CT Image Storage (one file per slice); skipped"))
        return
    if sop_class == CT_IMAGE_STORAGE or (modality == "CT" and not sop_class):
        uid = str(value_of(ds, "SeriesInstanceUID", path, ""))
        if not uid:
            out.problems.append(Problem(str(path), f"{describe('SeriesInstanceUID')} is missing; "
                                        "the slice cannot be grouped; skipped"))
            return
        value_of(ds, "FrameOfReferenceUID", path, "")  # unreadable: the file is reported, not its series
        out.ct[uid].append((path, ds))
    elif sop_class == RT_DOSE_STORAGE or modality == "RTDOSE":
        value_of(ds, "FrameOfReferenceUID", path, "")
        out.dose.append((path, ds))
    elif sop_class == RT_STRUCT_STORAGE or modality == "RTSTRUCT":
        _struct_frames(ds)
        out.struct.append((path, ds))
    elif sop_class == RT_PLAN_STORAGE or modality == "RTPLAN":
        out.plans += 1
        out.plan.append((path, ds))
    else:
        out.other[modality or sop_class or "unknown"] += 1


def _struct_frames(ds: pydicom.Dataset) -> set[str]:
    """The FrameOfReferenceUIDs an RTSTRUCT references (raises when its sequences cannot be read)."""
    fuids = {str(r.get("FrameOfReferenceUID", "")) for r in ds.get("ReferencedFrameOfReferenceSequence", []) or []}
    fuids |= {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", []) or []}
    return fuids - {""}   # a lost UID references nothing


def series_to_volume(ct: CTSeries, dose: tuple[Path, DoseGrid, pydicom.Dataset] | None,
                     struct: tuple[Path, pydicom.Dataset] | None) -> Volume:
    """Resample a CT series (and its dose and structures) onto the model grid."""
    placement = place_grid(ct.hu, ct.geometry, ct.ipps)
    ct_grid = stack_to_grid(ct.hu, ct.geometry.spacing, placement.start, kind="ct")
    info: dict = {"study_uid": ct.study_uid, "frame_of_reference_uid": ct.frame_of_reference_uid,
                  "slice_thickness_mm": ct.slice_thickness}
    warnings = list(ct.warnings)
    dose_grid = None
    if dose is not None:
        path, grid, dds = dose
        dose_grid = grid.sample_planes(placement.origins_mm, ct.geometry.row_dir, ct.geometry.col_dir,
                                       GRID_SIZE, GRID_SPACING_MM)
        info["dose"] = {"sop_instance_uid": str(dds.get("SOPInstanceUID", "")),
                        "summation_type": str(dds.get("DoseSummationType", "")),
                        "max_gy": float(grid.gy.max())}
    masks: dict[str, np.ndarray] = {}
    if struct is not None:
        spath, sds = struct
        masks, swarn = rasterise_structure_set(sds, ct.z_mm, placement.origins_mm, ct.geometry.row_dir,
                                               ct.geometry.col_dir, source=str(spath))
        warnings += swarn
        info["structure_set"] = {"sop_instance_uid": str(sds.get("SOPInstanceUID", "")),
                                 "label": "", "rois": sorted(masks)}
    info["instances"] = instance_evidence(ct.series_uid, ct.sop_uids, ct.z_mm, ct.instance_numbers,
                                          struct[1] if struct is not None else None)
    if not info["instances"]["complete"]:
        ev = info["instances"]
        warnings.append(Problem(str(ct.files[0].parent), f"series {ct.series_uid} is incomplete: {ev['present']} of "
                                f"{ev['expected']} instances ({'; '.join(ev['missing'])}); stored and marked "
                                "incomplete, it is completed when its missing instances are ingested or received "
                                "with the others", level="warning"))
    dz = float(np.median(np.diff(ct.z_mm))) if len(ct.z_mm) > 1 else ct.slice_thickness
    return Volume(
        patient_id=ct.patient_id, series_uid=ct.series_uid, source="dicom",
        slice_index=np.arange(len(ct.z_mm), dtype=np.int64), z_mm=ct.z_mm, origins_mm=placement.origins_mm,
        row_dir=ct.geometry.row_dir, col_dir=ct.geometry.col_dir,
        native_spacing=(ct.geometry.spacing[0], ct.geometry.spacing[1], dz),
        ct=ct_grid, dose=dose_grid, masks=masks, info=info, warnings=warnings)


def read_dicom(sources: Iterable[str | Path], progress: bool = False,
               known_series: set[str] | dict[str, dict] | None = None, workers: int | None = None) -> Iterator[Volume | Problem]:
    """Read every CT series under ``sources`` with its dose and structures.

    Yields a :class:`Volume` per usable CT series (slices without body not yet removed) and a
    :class:`Problem` for everything that could not be used or deserves a warning. Series whose
    SeriesInstanceUID is in ``known_series`` are not read again (idempotent re-ingest), unless these
    files complete them: ``known_series`` may map each UID to what the archive holds of it
    (:meth:`medhash.store.Archive.series_instances`), and a series whose files hold every instance stored
    and more, or the RTDOSE or RTSTRUCT it lacks, is read again to be completed. Series are
    read in ``workers`` processes (default: one per core, at most 4), yielded in a fixed order.
    """
    found = scan(sources, progress=progress)
    yield from found.problems
    if found.other:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(found.other.items()))
        yield Problem("(sources)", f"ignored DICOM objects of other kinds: {kinds}", level="warning")
    problems: list[Problem] = []
    jobs = _series_jobs(found, known_series, problems)
    yield from problems
    yield from _run_jobs(jobs, found, progress, workers)


def _by_frame_of_reference(found: DicomScan, problems: list[Problem]) -> tuple[dict, dict, dict]:
    """(CT series UID -> its FrameOfReferenceUID, FrameOfReferenceUID -> its RTDOSE, -> its RTSTRUCT);
    dose and structure sets that match no CT series of the scan go to ``problems``."""
    for_of_ct = {uid: _common_frame(items) for uid, items in found.ct.items()}
    ct_fors = set(for_of_ct.values()) - {""}   # a series without one matches nothing (never by '')
    doses: dict[str, list] = defaultdict(list)
    for path, ds in found.dose:
        fuid = str(ds.get("FrameOfReferenceUID", ""))
        if not fuid or fuid not in ct_fors:
            problems.append(Problem(str(path), f"RTDOSE with {describe('FrameOfReferenceUID')} "
                                    f"{fuid or '(missing)'} matches no CT series in this run; not ingested "
                                    "(ingest it together with its CT series)"))
            continue
        doses[fuid].append((path, ds))
    structs: dict[str, list] = defaultdict(list)
    for path, ds in found.struct:
        fuids = _struct_frames(ds)
        match = sorted(fuids & ct_fors)
        if not match:
            problems.append(Problem(str(path), "RTSTRUCT references no CT series of this run (by "
                                    f"{describe('FrameOfReferenceUID')}); not ingested"))
            continue
        structs[match[0]].append((path, ds))
    return for_of_ct, doses, structs


def _common_frame(items: list[tuple[Path, pydicom.Dataset]]) -> str:
    """The FrameOfReferenceUID most slices of a CT series give ('' when none does): one slice that lost
    it does not cost the series its dose and structures."""
    counts = Counter(str(ds.get("FrameOfReferenceUID", "") or "") for _, ds in items)
    counts.pop("", None)
    return min(counts, key=lambda f: (-counts[f], f)) if counts else ""


def _series_jobs(found: DicomScan, known_series: set[str] | None, problems: list[Problem]) -> list[tuple]:
    """One job ``(series UID, CT files, RTDOSE files or None, RTSTRUCT files or None)`` per CT series to
    read, in UID order (the RTDOSE and RTSTRUCT chosen first, then the other files holding its
    SOPInstanceUID); the choices made (and series already known) go to ``problems``."""
    for_of_ct, doses, structs = _by_frame_of_reference(found, problems)
    jobs = []
    warned_dose: set[str] = set()  # one warning per frame of reference, not per CT series
    for uid in sorted(found.ct):
        fuid = for_of_ct[uid]
        if known_series and uid in known_series:
            held = known_series[uid] if isinstance(known_series, dict) else None
            skip = _known_series_problem(uid, found.ct[uid], held, fuid in doses, fuid in structs)
            if skip is not None:
                problems.append(skip)
                continue
        dose_path = struct_path = None
        if fuid in doses:
            dose_path, dds = choose_dose(doses[fuid])
            others = [p for p, _ in doses[fuid] if p != dose_path and p not in _copies(doses[fuid], dose_path)]
            if others and fuid not in warned_dose:
                warned_dose.add(fuid)
                problems.append(Problem(str(dose_path), f"{len(others) + 1} RTDOSE for frame of reference "
                                        f"{fuid}: used this one (DoseSummationType "
                                        f"{dds.get('DoseSummationType', '?')}); ignored " + ", ".join(map(str, others)),
                                        level="warning"))
        if fuid in structs:
            cands = _newest_first(structs[fuid])
            struct_path = cands[0][0]
            n_other = len(cands) - 1 - len(_copies(cands, struct_path))
            if n_other:
                problems.append(Problem(str(struct_path), f"{n_other + 1} RTSTRUCT for frame of reference {fuid}: "
                                        "used the newest (this one)", level="warning"))
        # copies of the chosen objects (one SOPInstanceUID in several files) are tried next if it is damaged
        dose_files = [dose_path] + _copies(doses.get(fuid, []), dose_path) if dose_path else None
        struct_files = [struct_path] + _copies(structs.get(fuid, []), struct_path) if struct_path else None
        jobs.append((uid, [p for p, _ in found.ct[uid]], dose_files, struct_files))
    return jobs


def _known_series_problem(uid: str, items: list[tuple[Path, pydicom.Dataset]], held: dict | None, dose: bool,
                          struct: bool) -> Problem | None:
    """None when series ``uid``, already in the archive, is to be read again because these files complete
    it (:func:`medhash.store.series.completes`: every instance it holds and more, or the RTDOSE or
    RTSTRUCT it lacks); else the problem saying why it is not read (``info`` level: already there)."""
    first = str(items[0][0])
    stored = set(held["sop_uids"]) if held and held.get("sop_uids") is not None else None
    if stored is None:
        return Problem(first, f"series {uid} is already in the archive; not read again", level="info")
    found = set()
    for _, ds in items:
        try:
            found.add(str(ds.get("SOPInstanceUID", "") or ""))
        except Exception:  # a damaged value: not an instance this can count
            continue
    found.discard("")
    new, lacking = found - stored, stored - found
    brings = (dose and not held.get("dose")) or (struct and not held.get("structures"))
    if lacking and new:
        return Problem(first, f"series {uid} is in the archive with {len(stored)} instances{_incomplete(held)}; these "
                       f"files add {len(new)} but lack {len(lacking)} of those stored: a series is completed from "
                       "all its instances together, so ingest or send the whole series again; not read",
                       level="warning")
    if lacking or not (new or brings):
        return Problem(first, f"series {uid} is already in the archive; not read again", level="info")
    return None


def _incomplete(held: dict) -> str:
    return f" (incomplete: {held['expected']} expected)" if held.get("expected", 0) > len(held["sop_uids"]) else ""


def _copies(candidates: list[tuple[Path, pydicom.Dataset]], chosen: Path) -> list[Path]:
    """The other files of ``candidates`` that hold the SOPInstanceUID of ``chosen``."""
    def sop(ds: pydicom.Dataset) -> str:
        try:
            return str(ds.get("SOPInstanceUID", "") or "")
        except Exception:  # damaged: no copy of anything
            return ""
    want = next((sop(d) for p, d in candidates if p == chosen), "")
    return [p for p, d in candidates if p != chosen and want and sop(d) == want]


def _run_jobs(jobs: list[tuple], found: DicomScan, progress: bool, workers: int | None
              ) -> Iterator[Volume | Problem]:
    """:func:`read_series_job` of every job, in this process or in ``workers`` forked ones, in job order;
    a problem met by several series (sharing a frame of reference) is yielded once."""
    from tqdm import tqdm  # start-up: tqdm only when reading folders

    global _FORKED_SCAN
    bar = tqdm(total=len(jobs), desc="CT series", unit="series", disable=not progress, leave=False)
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1, 4)
    if workers <= 1 or len(jobs) <= 1:
        # in this process: the headers read by the scan are used again, only the pixel data is read
        results = (read_series_job(job, found) for job in jobs)
        pool = None
    else:
        # forked workers inherit the scan (module global set before they start): they reuse its headers too
        _FORKED_SCAN = found
        pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), initializer=die_with_parent)
        results = pool.map(_read_series_job_forked, jobs)
    seen: set[Problem] = set()
    done = 0
    try:
        for items in results:
            bar.update(1)
            done += 1
            for item in items:
                if isinstance(item, Problem):
                    if item in seen:
                        continue
                    seen.add(item)
                yield item
    except BrokenProcessPool as exc:  # a worker killed (out of memory, a crashing decoder): the rest reported
        for uid, paths, _, _ in jobs[done:]:
            yield Problem(str(paths[0].parent) if paths else uid, f"CT series {uid} was not read: a worker process "
                          f"died while series were being read ({exc}); ingest this folder again")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            _FORKED_SCAN = None


_FORKED_SCAN: DicomScan | None = None
"""The scan of the read_dicom call whose forked workers are running (None otherwise)."""


def _read_series_job_forked(job) -> list[Volume | Problem]:
    """:func:`read_series_job` in a forked worker, with the scan it inherited from its parent."""
    return read_series_job(job, _FORKED_SCAN)


def read_series_job(job: tuple[str, list[Path], Path | list[Path] | None, Path | list[Path] | None],
                    scanned: DicomScan | None = None) -> list[Volume | Problem]:
    """Read one CT series with its RTDOSE and RTSTRUCT onto the model grid (runs in a worker).

    Never raises for a damaged input: anything that goes wrong becomes a :class:`Problem` naming the
    file (a damaged slice: that slice skipped; a damaged RTDOSE or RTSTRUCT: the series without it;
    anything else: the series skipped), so that one series never costs another.

    Parameters
    ----------
    job : (SeriesInstanceUID, CT files, RTDOSE, RTSTRUCT): each of the last two None, a file, or a list
        of files holding one object (the chosen file, then its copies: tried in turn if it is damaged).
    scanned : the scan that found the files, when the job runs in the process that scanned or in a
        worker forked from it: its headers are used again (the CT slices' pixel data read at the offsets it recorded, the
        RTSTRUCT and the RTDOSE header as read) instead of parsing every file a second time.

    Returns
    -------
    The problems met, then the Volume (if the series could be read).
    """
    uid, paths, _, _ = job
    out: list[Volume | Problem] = []
    with _quiet():
        try:
            _read_series(job, scanned, out)
        except Exception as exc:  # the last guard: a failure nobody foresaw costs this series only
            where = str(paths[0].parent) if paths else uid
            out.append(Problem(where, f"CT series {uid} could not be read ({type(exc).__name__}: "
                                      f"{' '.join(str(exc).split())[:300]}); series skipped"))
    return out


def _read_series(job: tuple, scanned: DicomScan | None, out: list[Volume | Problem]) -> None:
    """:func:`read_series_job`'s work: the problems met and then the volume appended to ``out``."""
    uid, paths, dose_path, struct_path = job
    items = []
    headers = dict(scanned.ct.get(uid, [])) if scanned is not None else {}
    for path in paths:
        ds = headers.get(path)
        if ds is not None and attach_pixel_data(ds, path, scanned.pixel_offsets.get(path)):
            items.append((path, ds))
            continue
        try:
            items.append((path, pydicom.dcmread(path)))
        except Exception as exc:
            out.append(Problem(str(path), f"cannot read ({type(exc).__name__}: {exc}); the file may be "
                               "truncated or corrupt; slice skipped"))
    try:
        ct = read_ct_series(uid, items)
    except InputError as exc:
        out.append(Problem(str(paths[0].parent), str(exc)))
        return
    dose = struct = None
    if dose_path:
        dose = _first_readable(_as_list(dose_path), lambda p: (p, read_dose(p), _header(scanned, "dose", p)),
                               "RTDOSE", "dose not used", out)
    if struct_path:
        struct = _first_readable(_as_list(struct_path), lambda p: (p, _structure_set(scanned, p)),
                                 "RTSTRUCT", "structures not ingested", out)
    try:
        out.append(series_to_volume(ct, dose, struct))
    except Exception as exc:
        out += ct.warnings
        why = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        out.append(Problem(str(ct.files[0].parent), f"CT series {uid} could not be placed on the model grid "
                                                   f"({why}); series skipped"))


def _as_list(paths: Path | list[Path]) -> list[Path]:
    return list(paths) if isinstance(paths, (list, tuple)) else [paths]


def _known(scanned: DicomScan | None, kind: str, path: Path) -> pydicom.Dataset | None:
    """The data set of ``path`` as the scan read it (``kind``: "dose" or "struct"), or None."""
    return next((d for p, d in getattr(scanned, kind) if p == path), None) if scanned is not None else None


def _header(scanned: DicomScan | None, kind: str, path: Path) -> pydicom.Dataset:
    """The header of ``path`` as the scan read it, else read now (without pixel data)."""
    known = _known(scanned, kind, path)
    return known if known is not None else pydicom.dcmread(path, stop_before_pixels=True)


def _structure_set(scanned: DicomScan | None, path: Path) -> pydicom.Dataset:
    """The RTSTRUCT data set of ``path``; InputError when the file is truncated."""
    known = _known(scanned, "struct", path)
    ds = known if known is not None else pydicom.dcmread(path, force=True)
    damage = truncation(path, ds)
    if damage:
        raise InputError(f"{path}: {damage}")
    return ds


def _first_readable(paths: list[Path], read, what: str, consequence: str, out: list) -> object | None:
    """``read(path)`` of the first of ``paths`` (copies of one object) that can be read, or None. Problems
    go to ``out``: errors when none could be read, warnings naming the copy used otherwise."""
    failed = []
    for path in paths:
        try:
            result = read(path)
        except Exception as exc:
            message = str(exc).removeprefix(f"{path}: ") if isinstance(exc, InputError) else \
                f"cannot read {what} ({type(exc).__name__}: {exc})"
            failed.append((path, message.removesuffix(f"; {consequence}")))
            continue
        for bad, message in failed:
            out.append(Problem(str(bad), f"{message}; not used: the other copy of this {what}, {path}, was used",
                               level="warning"))
        return result
    out += [Problem(str(bad), f"{message}; {consequence}") for bad, message in failed]
    return None


def _newest_first(structs: list[tuple[Path, pydicom.Dataset]]) -> list[tuple[Path, pydicom.Dataset]]:
    """RTSTRUCT (path, dataset) pairs, newest first by StructureSetDate, StructureSetTime, SOPInstanceUID."""
    def key(item: tuple[Path, pydicom.Dataset]) -> tuple[str, str, str]:
        try:
            return tuple(str(item[1].get(k, "") or "") for k in ("StructureSetDate", "StructureSetTime", "SOPInstanceUID"))
        except Exception:  # damaged values: the oldest
            return ("", "", "")
    return sorted(structs, key=key, reverse=True)
