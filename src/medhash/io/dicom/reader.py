"""Reading DICOM RT folders: headers grouped by kind, CT series matched with their RTDOSE and RTSTRUCT,
each series read onto the model grid (in forked worker processes), and single query slices.

Steps (each file's header is read first, without pixel data, to group):

1. Walk the folders; read headers (``stop_before_pixels``). Files without the ``DICM`` prefix are
   tried once more only if they start like a DICOM data set (group 0x0008), as some old RT exports
   do. Anything else is reported as "not DICOM".
2. Group CT slices by SeriesInstanceUID (:mod:`.ct` checks and orders each series).
3. RTDOSE matched by FrameOfReferenceUID (:mod:`.rtdose`): several for one frame of reference,
   the choice is recorded.
4. RTSTRUCT matched by FrameOfReferenceUID: contours rasterised on the model grid (:mod:`.rtstruct`).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ...core.grid import GRID_SIZE, GRID_SPACING_MM, place_grid, stack_to_grid
from ...core.records import Problem, Volume
from ...errors import InputError
from .codec import (CT_IMAGE_STORAGE, ENHANCED_CT_STORAGE, MEDIA_STORAGE_DIRECTORY, RT_DOSE_STORAGE,
                    RT_PLAN_STORAGE, RT_STRUCT_STORAGE, attach_pixel_data, describe, truncation, value_of)
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
    return fuids


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
    dz = float(np.median(np.diff(ct.z_mm))) if len(ct.z_mm) > 1 else ct.slice_thickness
    return Volume(
        patient_id=ct.patient_id, series_uid=ct.series_uid, source="dicom",
        slice_index=np.arange(len(ct.z_mm), dtype=np.int64), z_mm=ct.z_mm, origins_mm=placement.origins_mm,
        row_dir=ct.geometry.row_dir, col_dir=ct.geometry.col_dir,
        native_spacing=(ct.geometry.spacing[0], ct.geometry.spacing[1], dz),
        ct=ct_grid, dose=dose_grid, masks=masks, info=info, warnings=warnings)


def read_dicom(sources: Iterable[str | Path], progress: bool = False,
               known_series: set[str] | None = None, workers: int | None = None) -> Iterator[Volume | Problem]:
    """Read every CT series under ``sources`` with its dose and structures.

    Yields a :class:`Volume` per usable CT series (slices without body not yet removed) and a
    :class:`Problem` for everything that could not be used or deserves a warning. Series whose
    SeriesInstanceUID is in ``known_series`` are not read again (idempotent re-ingest). Series are
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
    ct_fors = set(for_of_ct.values())
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
    """One job ``(series UID, CT files, RTDOSE file or None, RTSTRUCT file or None)`` per CT series to
    read, in UID order; the choices made (and series already known) go to ``problems``."""
    for_of_ct, doses, structs = _by_frame_of_reference(found, problems)
    jobs = []
    warned_dose: set[str] = set()  # one warning per frame of reference, not per CT series
    for uid in sorted(found.ct):
        if known_series and uid in known_series:
            problems.append(Problem(str(found.ct[uid][0][0]), f"series {uid} is already in the archive; "
                                    "not read again", level="info"))
            continue
        fuid = for_of_ct[uid]
        dose_path = struct_path = None
        if fuid in doses:
            dose_path, dds = choose_dose(doses[fuid])
            others = [p for p, _ in doses[fuid] if p != dose_path]
            if others and fuid not in warned_dose:
                warned_dose.add(fuid)
                problems.append(Problem(str(dose_path), f"{len(doses[fuid])} RTDOSE for frame of reference "
                                        f"{fuid}: used this one (DoseSummationType "
                                        f"{dds.get('DoseSummationType', '?')}); ignored " + ", ".join(map(str, others)),
                                        level="warning"))
        if fuid in structs:
            cands = _newest_first(structs[fuid])
            struct_path = cands[0][0]
            if len(cands) > 1:
                problems.append(Problem(str(struct_path), f"{len(cands)} RTSTRUCT for frame of reference {fuid}: "
                                        "used the newest (this one)", level="warning"))
        jobs.append((uid, [p for p, _ in found.ct[uid]], dose_path, struct_path))
    return jobs


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
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
        results = pool.map(_read_series_job_forked, jobs)
    seen: set[Problem] = set()
    try:
        for items in results:
            bar.update(1)
            for item in items:
                if isinstance(item, Problem):
                    if item in seen:
                        continue
                    seen.add(item)
                yield item
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


def read_series_job(job: tuple[str, list[Path], Path | None, Path | None],
                    scanned: DicomScan | None = None) -> list[Volume | Problem]:
    """Read one CT series with its RTDOSE and RTSTRUCT onto the model grid (runs in a worker).

    Never raises for a damaged input: anything that goes wrong becomes a :class:`Problem` naming the
    file (a damaged slice: that slice skipped; a damaged RTDOSE or RTSTRUCT: the series without it;
    anything else: the series skipped), so that one series never costs another.

    Parameters
    ----------
    job : (SeriesInstanceUID, CT files, RTDOSE file or None, RTSTRUCT file or None)
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
    if dose_path is not None:
        try:
            header = next((d for p, d in scanned.dose if p == dose_path), None) if scanned is not None else None
            dose = (dose_path, read_dose(dose_path),
                    header if header is not None else pydicom.dcmread(dose_path, stop_before_pixels=True))
        except Exception as exc:
            message = str(exc).removeprefix(f"{dose_path}: ") if isinstance(exc, InputError) else \
                f"cannot read RTDOSE ({type(exc).__name__}: {exc}); dose not used"
            out.append(Problem(str(dose_path), message))
    if struct_path is not None:
        try:
            known = next((d for p, d in scanned.struct if p == struct_path), None) if scanned is not None else None
            sds = known if known is not None else pydicom.dcmread(struct_path, force=True)
            damage = truncation(struct_path, sds)
            if damage:
                raise InputError(damage)
            struct = (struct_path, sds)
        except Exception as exc:
            out.append(Problem(str(struct_path), f"cannot read RTSTRUCT ({type(exc).__name__ if not isinstance(exc, InputError) else ''}"
                               f"{': ' if not isinstance(exc, InputError) else ''}{exc}); structures not ingested"))
    try:
        out.append(series_to_volume(ct, dose, struct))
    except Exception as exc:
        out += ct.warnings
        why = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        out.append(Problem(str(ct.files[0].parent), f"CT series {uid} could not be placed on the model grid "
                                                   f"({why}); series skipped"))


def read_query(path: str | Path, *, slice_index: int | None = None, dose_path: str | Path | None = None,
               structures: bool = False) -> tuple[Volume, int]:
    """A query slice from DICOM, on the model grid exactly as ``ingest`` would put it.

    Parameters
    ----------
    path : a CT slice file, or a folder holding one CT series (then ``slice_index`` picks the slice:
        0-based, in position order).
    dose_path : optional RTDOSE of the same frame of reference, resampled onto the slice.
    structures : for a folder, also rasterise the RTSTRUCT of the folder that references the CT's frame
        of reference (the newest by StructureSetDate / Time when there are several), as ingest does.

    Returns
    -------
    (volume, k) : the series on the model grid and the position of the query slice in it.
    """
    path = Path(path)
    if path.is_dir():
        found = scan([path])
        if not found.ct:
            raise InputError(f"{path}: no CT series in this folder" +
                             (f" ({found.problems[0].message})" if found.problems else ""))
        if len(found.ct) > 1:
            raise InputError(f"{path}: {len(found.ct)} CT series in this folder; give a folder with one series")
        uid, items = next(iter(found.ct.items()))
        struct_files = _structures_of(found) if structures else []
        plans = found.plan
        if slice_index is None:
            raise InputError(f"{path} is a series folder: say which slice (0 to {len(items) - 1})",
                             param="slice_index")
    else:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        ds = read_header(path)
        sop_class = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", "")).upper()
        if sop_class != CT_IMAGE_STORAGE and modality != "CT":
            raise InputError(f"{path}: a query must be a CT image; this file is {modality or sop_class or 'of no known type'}"
                             + ("" if modality or sop_class else " (no Modality, no SOP Class UID: truncated or corrupt?)"))
        uid, items = str(ds.get("SeriesInstanceUID", "") or "query"), [(path, ds)]
        struct_files, plans = [], []
        if slice_index not in (None, 0):
            raise InputError(f"{path} is a single slice: its slice index is 0 (or leave it out)", param="slice_index")
    full = []
    for p, _ in items:
        try:
            full.append((p, pydicom.dcmread(p)))
        except Exception as exc:
            raise InputError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    ct = read_ct_series(uid, full)
    k = 0 if slice_index is None else int(slice_index)
    if not 0 <= k < len(ct.z_mm):
        raise InputError(f"{path}: slice {k} is outside the series (0 to {len(ct.z_mm) - 1})", param="slice_index")
    dose = None
    if dose_path is not None:
        dose_path = Path(dose_path)
        hdr = read_header(dose_path)
        if str(hdr.get("Modality", "")).upper() != "RTDOSE":
            raise InputError(f"{dose_path}: the dose must be an RTDOSE file; this file is {hdr.get('Modality', '?')}",
                             param="dose")
        if ct.frame_of_reference_uid and str(hdr.get("FrameOfReferenceUID", "")) != ct.frame_of_reference_uid:
            raise InputError(f"{dose_path}: {describe('FrameOfReferenceUID')} differs from the CT's "
                             f"({ct.frame_of_reference_uid}); the dose belongs to another scan")
        dose = (dose_path, read_dose(dose_path), hdr)
    struct = None
    if struct_files:
        spath = struct_files[0]
        try:
            struct = (spath, pydicom.dcmread(spath, force=True))
        except Exception as exc:
            raise InputError(f"{spath}: cannot read the RTSTRUCT ({type(exc).__name__}: {exc})") from None
    vol = series_to_volume(ct, dose, struct)
    if struct is not None:
        vol.info["prescriptions"] = prescriptions(struct[1], plans)
    return vol, k


def prescriptions(struct: pydicom.Dataset, plans: list[tuple[Path, pydicom.Dataset]]) -> dict[str, float]:
    """ROI name -> prescribed dose (Gy) of the targets of a structure set, read from the RT plans that
    reference it: each Dose Reference with a ReferencedROINumber and a TargetPrescriptionDose in (0, 120]
    Gy (other values are ignored). Names are the structure set's ROI names; {} without such a plan."""
    uid = str(struct.get("SOPInstanceUID", ""))
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in struct.get("StructureSetROISequence", [])
             if r.get("ROINumber") is not None}
    out: dict[str, float] = {}
    for _, plan in plans:
        refs = {str(r.get("ReferencedSOPInstanceUID", "")) for r in plan.get("ReferencedStructureSetSequence", [])}
        if uid not in refs:
            continue
        for ref in plan.get("DoseReferenceSequence", []):
            try:
                roi, gy = int(ref.get("ReferencedROINumber")), float(ref.get("TargetPrescriptionDose"))
            except (TypeError, ValueError):
                continue
            if roi in names and names[roi] and 0 < gy <= 120:
                out[names[roi]] = gy
    return out


def _structures_of(found: DicomScan) -> list[Path]:
    """The RTSTRUCT files of a scanned folder that reference its CT series' frame of reference, newest
    first (StructureSetDate, StructureSetTime, SOPInstanceUID), as ingest chooses."""
    for_of_ct, _, structs = _by_frame_of_reference(found, [])
    return [p for p, _ in _newest_first([c for fuid in set(for_of_ct.values()) for c in structs.get(fuid, [])])]


def _newest_first(structs: list[tuple[Path, pydicom.Dataset]]) -> list[tuple[Path, pydicom.Dataset]]:
    """RTSTRUCT (path, dataset) pairs, newest first by StructureSetDate, StructureSetTime, SOPInstanceUID."""
    def key(item: tuple[Path, pydicom.Dataset]) -> tuple[str, str, str]:
        try:
            return tuple(str(item[1].get(k, "") or "") for k in ("StructureSetDate", "StructureSetTime", "SOPInstanceUID"))
        except Exception:  # damaged values: the oldest
            return ("", "", "")
    return sorted(structs, key=key, reverse=True)
