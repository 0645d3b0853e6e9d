"""CT series: the slices of one SeriesInstanceUID, checked, ordered and converted to HU.

The largest group of slices with one orientation, pixel spacing and matrix size is kept (a localizer in
the same series is reported and left out); slices are ordered by ImagePositionPatient projected on the
slice normal (never by file name or InstanceNumber); missing slices and uneven spacing are reported
with the z positions concerned. HU = stored value x RescaleSlope + RescaleIntercept (PS3.3 C.11.1.1.2).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from ...core.grid import PlaneGeometry
from ...core.records import Problem
from ...errors import InputError
from .codec import decoded_pixels, describe, is_lossy, require

_ORIENT_TOL = 1e-4


@dataclass
class CTSeries:
    """One CT series read from disk, native grid, position order."""

    patient_id: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    geometry: PlaneGeometry
    ipps: np.ndarray          # (n, 3) mm
    z_mm: np.ndarray          # (n,) mm along the normal
    hu: np.ndarray            # (n, rows, cols) float32 HU
    sop_uids: list[str]
    files: list[Path]
    slice_thickness: float
    warnings: list[Problem] = field(default_factory=list)


def orientation(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) unit direction vectors (3,) of ImageOrientationPatient; InputError naming the element
    when it is missing or not two orthogonal unit vectors."""
    iop = np.asarray(require(ds, "ImageOrientationPatient", path, why="the slice cannot be placed"),
                     dtype=np.float64)
    if iop.shape != (6,):
        raise InputError(f"{path}: {describe('ImageOrientationPatient')} value {list(iop)} must have 6 numbers")
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(f"{path}: {describe('ImageOrientationPatient')} value {list(iop)} is not two "
                         "orthogonal unit vectors")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _plane_key(ds: pydicom.Dataset, path: Path) -> tuple:
    row, col = orientation(ds, path)
    spacing = tuple(float(v) for v in require(ds, "PixelSpacing", path))
    if len(spacing) != 2 or min(spacing) <= 0:
        raise InputError(f"{path}: {describe('PixelSpacing')} value {list(spacing)} must be two positive numbers")
    shape = (int(require(ds, "Rows", path)), int(require(ds, "Columns", path)))
    return (tuple(np.round(row / _ORIENT_TOL).astype(int)), tuple(np.round(col / _ORIENT_TOL).astype(int)),
            tuple(round(s, 3) for s in spacing), shape), row, col, spacing


def pixel_hu(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """HU of a CT slice: stored value x RescaleSlope + RescaleIntercept, (rows, cols) float32."""
    arr = decoded_pixels(ds, path, "slice skipped")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected one 2D frame, pixel data has shape {arr.shape}; skipped")
    hu = arr.astype(np.float32)  # a new array: scaled in place
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    return hu


def read_ct_series(series_uid: str, items: list[tuple[Path, pydicom.Dataset]]) -> CTSeries:
    """Read, check and order one CT series (pixel data included).

    Raises
    ------
    InputError
        When no slice of the series can be used. Problems with single slices are returned in
        ``warnings`` and those slices are left out.
    """
    warnings: list[Problem] = []
    main = _largest_plane_group(series_uid, items, warnings)
    _, ds0, row, col, spacing, _ = main[0]
    geometry = PlaneGeometry(row_dir=row, col_dir=col, spacing=(float(spacing[0]), float(spacing[1])),
                             shape=(int(ds0.Rows), int(ds0.Columns)))
    normal = geometry.normal
    main.sort(key=lambda t: (float(t[5] @ normal), str(t[1].get("SOPInstanceUID", ""))))
    kept, hu = _read_pixels(_unique_positions(main, normal, warnings), geometry, warnings)
    if not kept:
        _raise_single(items, warnings)
        raise InputError(f"CT series {series_uid}: none of its {len(items)} slice(s) could be read")

    lossy = [t[0] for t in kept if is_lossy(t[1])]
    if lossy:
        warnings.append(Problem(str(lossy[0]), f"{len(lossy)} of the {len(kept)} slices of series {series_uid} "
                                "went through lossy compression (LossyImageCompression 01 or a lossy JPEG "
                                "transfer syntax): their HU are not the scanner's (8-bit JPEG: errors of tens "
                                "of HU); ingested all the same", level="warning"))
    ipps = np.array([t[5] for t in kept])
    z = ipps @ normal
    warnings += spacing_warnings(z, [t[0] for t in kept], series_uid)
    first = kept[0][1]
    thickness = float(first.get("SliceThickness", 0) or 0) or (float(np.median(np.diff(z))) if len(z) > 1 else 0.0)
    patient_id = str(first.get("PatientID", "") or "").strip()
    study_uid = str(first.get("StudyInstanceUID", ""))
    if not patient_id:
        patient_id = "anonymous-" + (study_uid or series_uid)[-12:]
        warnings.append(Problem(str(kept[0][0]), f"{describe('PatientID')} is empty; patient stored as "
                                f"{patient_id!r}", level="warning"))
    return CTSeries(
        patient_id=patient_id, series_uid=series_uid, study_uid=study_uid,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")), geometry=geometry, ipps=ipps,
        z_mm=z, hu=np.stack(hu), sop_uids=[str(t[1].get("SOPInstanceUID", "")) for t in kept],
        files=[t[0] for t in kept], slice_thickness=thickness, warnings=warnings)


def _raise_single(items: list, warnings: list[Problem]) -> None:
    """For a series of one file (a query) whose slice was left out: its own reason, as an InputError."""
    if len(items) == 1 and warnings:
        w = warnings[0]
        raise InputError(f"{w.path}: {w.message.removesuffix('; slice skipped')}")


def _largest_plane_group(series_uid: str, items: list[tuple[Path, pydicom.Dataset]],
                         warnings: list[Problem]) -> list[tuple]:
    """The slices ``(path, ds, row, col, spacing, ipp)`` of the largest group with one orientation, pixel
    spacing and matrix size; slices that cannot be placed and the other groups go to ``warnings``."""
    groups: dict[tuple, list] = defaultdict(list)
    for path, ds in items:
        try:
            key, row, col, spacing = _plane_key(ds, path)
            ipp = np.asarray(require(ds, "ImagePositionPatient", path, why="the slice cannot be placed"),
                             dtype=np.float64)
            if ipp.shape != (3,):
                raise InputError(f"{path}: {describe('ImagePositionPatient')} value {list(ipp)} must have 3 numbers")
        except InputError as exc:
            warnings.append(Problem(str(path), str(exc).removeprefix(f"{path}: ") + "; slice skipped"))
            continue
        groups[key].append((path, ds, row, col, spacing, ipp))
    if not groups:
        _raise_single(items, warnings)
        raise InputError(f"CT series {series_uid}: no slice has a usable geometry")
    ordered = sorted(groups.values(), key=len, reverse=True)
    main = ordered[0]
    for other in ordered[1:]:
        p, _, r, c, s, _ = other[0]
        warnings.append(Problem(str(p), f"{len(other)} slice(s) of series {series_uid} have another "
                                f"orientation/spacing/size (orientation {list(np.r_[r, c].round(4))}, pixel "
                                f"spacing {list(s)}) than the other {len(main)}; left out (a localizer?)",
                                level="warning"))
    return main


def _unique_positions(ordered: list[tuple], normal: np.ndarray, warnings: list[Problem]) -> list[tuple]:
    """``ordered`` (position order) without a second copy of one SOP instance or a second slice at one
    position (reported in ``warnings``)."""
    unique, seen_sop = [], set()
    for item in ordered:
        sop = str(item[1].get("SOPInstanceUID", ""))
        if sop and sop in seen_sop:
            continue
        seen_sop.add(sop)
        if unique and abs(float(item[5] @ normal) - float(unique[-1][5] @ normal)) < 1e-3:
            warnings.append(Problem(str(item[0]), f"a second slice at z = {float(item[5] @ normal):.2f} mm "
                                    f"(first: {unique[-1][0]}); left out", level="warning"))
            continue
        unique.append(item)
    return unique


def _read_pixels(slices: list[tuple], geometry: PlaneGeometry, warnings: list[Problem]
                 ) -> tuple[list[tuple], list[np.ndarray]]:
    """The slices whose pixel data could be read and their HU (rows, cols) float32; the others go to
    ``warnings``. Pixel data already attached to a header is freed once decoded."""
    hu, kept = [], []
    for item in slices:
        path = item[0]
        try:
            full = item[1] if "PixelData" in item[1] else pydicom.dcmread(path)
            img = pixel_hu(full, path)
            if "PixelData" in item[1]:
                del item[1].PixelData  # decoded: free the bytes
            if img.shape != geometry.shape:
                raise InputError(f"{path}: pixel data has shape {img.shape}, header says {geometry.shape}")
        except InputError as exc:
            warnings.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        except Exception as exc:
            warnings.append(Problem(str(path), f"cannot read ({type(exc).__name__}: {exc}); the file may be "
                                    "truncated or corrupt; slice skipped"))
            continue
        hu.append(img)
        kept.append(item)
    return kept, hu


def spacing_warnings(z: np.ndarray, files: list, series_uid: str) -> list[Problem]:
    """Warnings for gaps (a missing slice) and uneven spacing along z (sorted positions, mm)."""
    if len(z) < 3:
        return []
    dz = np.diff(z)
    step = float(np.median(dz))
    out = []
    gaps = np.flatnonzero(dz > 1.5 * step)
    for g in gaps:
        missing = int(round(dz[g] / step)) - 1
        out.append(Problem(str(files[g + 1]), f"series {series_uid}: {missing} slice(s) missing between "
                           f"z = {z[g]:.2f} mm and z = {z[g + 1]:.2f} mm (spacing {step:.2f} mm elsewhere); "
                           "ingested with the gap", level="warning"))
    regular = np.delete(dz, gaps)
    if len(regular) and (regular.max() - regular.min()) > max(0.01 * step, 0.01):
        k = int(np.argmax(np.abs(regular - step)))
        k = int(np.flatnonzero(dz == regular[k])[0])
        out.append(Problem(str(files[k + 1]), f"series {series_uid}: uneven slice spacing, "
                           f"{regular.min():.3f} to {regular.max():.3f} mm (e.g. {dz[k]:.3f} mm between "
                           f"z = {z[k]:.2f} and {z[k + 1]:.2f} mm); ingested as it is", level="warning"))
    return out

