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

from ...core.grid import HU_MAX, HU_MIN, POSITION_LIMIT_MM, SPACING_RANGE_MM, PlaneGeometry
from ...core.records import Problem
from ...errors import InputError
from .codec import decoded_pixels, describe, is_lossy, number, numbers, value_of

RESCALE_SLOPE_RANGE = (1e-6, 100.0)
"""Accepted RescaleSlope (0028,1053): positive and at most 100 (CT uses 1, sometimes 0.5 or 2)."""
RESCALE_INTERCEPT_RANGE = (-65536.0, 65536.0)
"""Accepted RescaleIntercept (0028,1052), HU."""
BITS_STORED_RANGE = (8, 16)
"""Accepted BitsStored (0028,0101) of a CT slice (the standard says 12 to 16; 8 is let through)."""
MAX_FRACTION_ABOVE_HU_MAX = 0.1
"""A slice with more than this fraction of its pixels above HU_MAX is refused (damaged rescale values),
not clipped: metal rarely covers more than a few percent of a slice."""

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
    instance_numbers: list[int | None] = field(default_factory=list)
    """InstanceNumber (0020,0013) of each slice kept, None where absent or unreadable (the evidence of
    :func:`medhash.io.dicom.completeness.instance_evidence`)."""


def orientation(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) unit direction vectors (3,) of ImageOrientationPatient; InputError naming the element
    when it is missing or not two orthogonal unit vectors."""
    iop = numbers(ds, "ImageOrientationPatient", path, count=6, lo=-1.001, hi=1.001,
                  why="the slice cannot be placed")
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(f"{path}: {describe('ImageOrientationPatient')} value {list(iop)} is not two "
                         "orthogonal unit vectors")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _plane_key(ds: pydicom.Dataset, path: Path) -> tuple:
    row, col = orientation(ds, path)
    spacing = tuple(float(v) for v in numbers(ds, "PixelSpacing", path, count=2, lo=SPACING_RANGE_MM[0],
                                              hi=SPACING_RANGE_MM[1], unit="mm"))
    shape = (int(number(ds, "Rows", path, lo=1, hi=65535)), int(number(ds, "Columns", path, lo=1, hi=65535)))
    return (tuple(np.round(row / _ORIENT_TOL).astype(int)), tuple(np.round(col / _ORIENT_TOL).astype(int)),
            tuple(round(s, 3) for s in spacing), shape), row, col, spacing


def pixel_hu(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """HU of a CT slice: stored value x RescaleSlope + RescaleIntercept, (rows, cols) float32 (not clipped).

    InputError naming the element when the slope or intercept is missing, not finite or outside
    :data:`RESCALE_SLOPE_RANGE` / :data:`RESCALE_INTERCEPT_RANGE`.
    """
    why = "stored values cannot be converted to HU"  # both are Type 1 in the CT Image module (PS3.3 C.8.2.1)
    slope = number(ds, "RescaleSlope", path, lo=RESCALE_SLOPE_RANGE[0], hi=RESCALE_SLOPE_RANGE[1], why=why)
    intercept = number(ds, "RescaleIntercept", path, lo=RESCALE_INTERCEPT_RANGE[0], hi=RESCALE_INTERCEPT_RANGE[1],
                       unit="HU", why=why)
    # CT stores 12 to 16 bits (PS3.3 C.8.2.1.1); fewer would mask the values into an empty picture
    number(ds, "BitsStored", path, lo=BITS_STORED_RANGE[0], hi=BITS_STORED_RANGE[1], why=why)
    arr = decoded_pixels(ds, path, "slice skipped")
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

    HU outside [HU_MIN, HU_MAX] (:mod:`medhash.core.grid`) are clipped, with one warning counting the
    pixels; several files holding one SOPInstanceUID are decided by :func:`_resolve_duplicates`.

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
    main.sort(key=lambda t: (float(t[5] @ normal), str(t[1].get("SOPInstanceUID", "")), str(t[0])))
    clipped: dict[Path, tuple[int, int]] = {}
    kept, hu = _read_pixels(main, geometry, warnings, clipped)
    kept, hu = _resolve_duplicates(kept, hu, items, normal, warnings)
    kept, hu = _unique_positions(kept, hu, normal, warnings)
    if not kept:
        _raise_single(items, warnings)
        raise InputError(f"CT series {series_uid}: none of its {len(items)} slice(s) could be read")
    warnings += _clipping_warning(clipped, {t[0] for t in kept}, series_uid)
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
    thickness = _slice_thickness(first, kept[0][0], z, warnings)
    patient_id = str(value_of(first, "PatientID", kept[0][0], "") or "").strip()
    study_uid = str(value_of(first, "StudyInstanceUID", kept[0][0], ""))
    if not patient_id:
        patient_id = "anonymous-" + (study_uid or series_uid)[-12:]
        warnings.append(Problem(str(kept[0][0]), f"{describe('PatientID')} is empty; patient stored as "
                                f"{patient_id!r}", level="warning"))
    return CTSeries(
        patient_id=patient_id, series_uid=series_uid, study_uid=study_uid,
        frame_of_reference_uid=str(value_of(first, "FrameOfReferenceUID", kept[0][0], "")), geometry=geometry,
        ipps=ipps, z_mm=z, hu=np.stack(hu), sop_uids=[_sop(t) for t in kept],
        files=[t[0] for t in kept], slice_thickness=thickness, warnings=warnings,
        instance_numbers=[_instance_number(t) for t in kept])


def _clipping_warning(clipped: dict[Path, tuple[int, int]], kept: set[Path], series_uid: str) -> list[Problem]:
    """One warning for the HU clipped in the slices kept (``clipped``: file -> pixels below, above),
    naming the file with the most clipped pixels."""
    counts = {p: c for p, c in clipped.items() if p in kept}
    if not counts:
        return []
    below, above = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    worst = max(counts, key=lambda p: (sum(counts[p]), str(p)))
    return [Problem(str(worst), f"series {series_uid}: {below + above} pixel(s) outside [{HU_MIN:g}, {HU_MAX:g}] HU "
                    f"clipped to that range ({below} below, {above} above) in {len(counts)} slice(s), "
                    f"{sum(counts[worst])} in this one", level="warning")]


def _sop(item: tuple) -> str:
    """SOPInstanceUID of a slice tuple ``(path, ds, ...)`` ('' when missing or unreadable)."""
    try:
        return str(item[1].get("SOPInstanceUID", "") or "")
    except Exception:  # a damaged value: treated as missing
        return ""


def _instance_number(item: tuple) -> int | None:
    """InstanceNumber of a slice tuple ``(path, ds, ...)``, None when missing or unreadable."""
    try:
        value = item[1].get("InstanceNumber", None)
        return None if value in (None, "") else int(value)
    except Exception:  # a damaged value: no evidence
        return None


def _slice_thickness(ds: pydicom.Dataset, path: Path, z: np.ndarray, warnings: list[Problem]) -> float:
    """SliceThickness (mm) of the first slice; the median spacing of ``z`` when it is absent or unusable."""
    fallback = float(np.median(np.diff(z))) if len(z) > 1 else 0.0
    try:
        return number(ds, "SliceThickness", path, default=0.0, lo=0.0, hi=1000.0, unit="mm") or fallback
    except InputError as exc:
        warnings.append(Problem(str(path), str(exc).removeprefix(f"{path}: ") + f"; the slice spacing "
                                f"({fallback:.3f} mm) used instead", level="warning"))
        return fallback


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
            ipp = numbers(ds, "ImagePositionPatient", path, count=3, lo=-POSITION_LIMIT_MM, hi=POSITION_LIMIT_MM,
                          unit="mm", why="the slice cannot be placed")
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


def _resolve_duplicates(kept: list[tuple], hu: list[np.ndarray], items: list[tuple], normal: np.ndarray,
                        warnings: list[Problem]) -> tuple[list[tuple], list[np.ndarray]]:
    """One slice per SOPInstanceUID, decided, never guessed.

    Copies with the same pixels and position are one slice (the first kept, silently). Of copies that
    differ, the one kept is the only one whose position no slice of another SOP instance holds;
    when that does not single one out the slice is skipped and every copy reported. Copies left out
    earlier (unreadable, damaged geometry) have their messages say which copy was used.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(kept):
        groups[_sop(item) or f"file:{item[0]}"].append(i)
    files_of: dict[str, list[Path]] = defaultdict(list)
    for item in items:
        files_of[_sop(item)].append(item[0])
    copies = {p: sop for sop, files in files_of.items() if sop and len(files) > 1 for p in files}
    if not copies:
        return kept, hu
    drop: set[int] = set()
    used: dict[str, Path | None] = {}
    z = [float(t[5] @ normal) for t in kept]
    for sop, idx in groups.items():
        distinct: list[int] = []
        for i in idx:
            if any(np.array_equal(hu[i], hu[j]) and abs(z[i] - z[j]) < 1e-3 for j in distinct):
                drop.add(i)  # the same slice twice: one kept, silently
            else:
                distinct.append(i)
        if len(distinct) > 1:
            others = [z[k] for k in range(len(kept)) if _sop(kept[k]) != sop]
            free = [i for i in distinct if not any(abs(z[i] - zo) < 1e-3 for zo in others)]
            keep = free[0] if len(free) == 1 else None
            for i in distinct:
                if i == keep:
                    continue
                drop.add(i)
                twins = ", ".join(str(kept[j][0]) for j in distinct if j != i)
                why = (f"its copy {kept[keep][0]} was used (this one lies at z = {z[i]:.2f} mm, where another "
                       "slice lies)" if keep is not None else "cannot tell which is right: slice skipped")
                warnings.append(Problem(str(kept[i][0]), f"SOP instance {sop} is also in {twins} with other "
                                        f"content; {why}", level="warning" if keep is not None else "error"))
            distinct = [keep] if keep is not None else []
        used[sop] = kept[distinct[0]][0] if distinct else None
    for n, w in enumerate(warnings):
        sop = copies.get(Path(w.path))
        if sop is not None and used.get(sop) is not None and Path(w.path) != used[sop]:
            warnings[n] = Problem(w.path, w.message.removesuffix("; slice skipped") + f"; not used: the other copy "
                                  f"of SOP instance {sop}, {used[sop]}, was used", level="warning")
    return [t for i, t in enumerate(kept) if i not in drop], [h for i, h in enumerate(hu) if i not in drop]


def _unique_positions(kept: list[tuple], hu: list[np.ndarray], normal: np.ndarray, warnings: list[Problem]
                      ) -> tuple[list[tuple], list[np.ndarray]]:
    """``kept`` (position order) without a second slice at one position (reported in ``warnings``)."""
    out, out_hu = [], []
    for item, img in zip(kept, hu):
        if out and abs(float(item[5] @ normal) - float(out[-1][5] @ normal)) < 1e-3:
            warnings.append(Problem(str(item[0]), f"a second slice at z = {float(item[5] @ normal):.2f} mm "
                                    f"(first: {out[-1][0]}); left out", level="warning"))
            continue
        out.append(item)
        out_hu.append(img)
    return out, out_hu


def _read_pixels(slices: list[tuple], geometry: PlaneGeometry, warnings: list[Problem],
                 clipped: dict[Path, tuple[int, int]]) -> tuple[list[tuple], list[np.ndarray]]:
    """The slices whose pixel data could be read and their HU (rows, cols) float32, clipped to
    [HU_MIN, HU_MAX] (``clipped``: file -> pixels below and above); the others go to ``warnings``.
    Pixel data already attached to a header is freed once decoded."""
    hu, kept = [], []
    for item in slices:
        path = item[0]
        try:
            full = item[1] if "PixelData" in item[1] else pydicom.dcmread(path)
            img = pixel_hu(full, path)
            if "PixelData" in item[1]:
                del item[1].PixelData  # decoded: free the bytes
            if img.shape != geometry.shape:
                raise InputError(f"{path}: pixel data has shape {img.shape}, header says {geometry.shape}; "
                                 "slice skipped")
            above, below = int((img > HU_MAX).sum()), int((img < HU_MIN).sum())
            if above > MAX_FRACTION_ABOVE_HU_MAX * img.size:
                raise InputError(f"{path}: {100 * above / img.size:.0f} % of the pixels are above {HU_MAX:g} HU "
                                 f"(stored value x {describe('RescaleSlope')} + {describe('RescaleIntercept')}): "
                                 "not a CT image as it stands; slice skipped")
        except InputError as exc:
            message = str(exc).removeprefix(f"{path}: ")
            warnings.append(Problem(str(path), message if message.endswith("skipped") else f"{message}; slice skipped"))
            continue
        except Exception as exc:
            warnings.append(Problem(str(path), f"cannot read ({type(exc).__name__}: {exc}); the file may be "
                                    "truncated or corrupt; slice skipped"))
            continue
        if above or below:
            np.clip(img, HU_MIN, HU_MAX, out=img)
            clipped[path] = (below, above)
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

