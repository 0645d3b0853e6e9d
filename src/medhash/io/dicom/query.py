"""Query slices from DICOM: a CT file or a series folder put on the model grid exactly as ingest would,
with its RTDOSE, its RTSTRUCT and the prescriptions of the RT plans that reference it."""
from __future__ import annotations

from pathlib import Path

import pydicom

from ...core.records import Volume
from ...errors import InputError
from .codec import CT_IMAGE_STORAGE, describe
from .ct import read_ct_series
from .reader import DicomScan, _by_frame_of_reference, _newest_first, read_header, scan, series_to_volume
from .rtdose import read_dose


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

    Raises
    ------
    InputError : naming the file, for anything in it that cannot be used (never another exception).
    """
    try:  # (not quietened as ingest is: the web server reads queries in threads, and warnings' filters are global)
        return _read_query(Path(path), slice_index, dose_path, structures)
    except InputError:
        raise
    except Exception as exc:  # a damage nobody foresaw: still a message naming the file
        raise InputError(f"{path}: cannot be read as a query ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from None


def _read_query(path: Path, slice_index: int | None, dose_path: str | Path | None, structures: bool
                ) -> tuple[Volume, int]:
    """:func:`read_query`'s work."""
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
