"""RTSTRUCT contours → named masks on the model grid (the structures of :mod:`medhash.io.dicom`).

Each CLOSED_PLANAR contour (PS3.3 C.8.8.6) is assigned to the CT slice whose position along the
normal is nearest to the contour's plane (within half the slice spacing), projected onto that
slice's model grid, and rasterised by pixel centre (a pixel is inside when its centre is). Several
contours of one ROI on one slice are combined by exclusive or, so an inner contour makes a hole
(the convention of most planning systems). Masks are never interpolated.
"""
from __future__ import annotations

import numpy as np
import pydicom

from ...core.grid import GRID_SIZE, GRID_SPACING_MM, POSITION_LIMIT_MM
from ...core.records import Problem
from ...errors import InputError


def polygon_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels of the model grid whose centre lies inside a polygon.

    Parameters
    ----------
    u, v : (n,) polygon vertices in model-grid pixel units (u = column, v = row).

    Returns
    -------
    (GRID_SIZE, GRID_SIZE) bool
    """
    from matplotlib.path import Path as MplPath  # start-up: matplotlib only when rasterising contours

    out = np.zeros((GRID_SIZE, GRID_SIZE), dtype=bool)
    c0, c1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())), GRID_SIZE - 1)
    r0, r1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())), GRID_SIZE - 1)
    if c0 > c1 or r0 > r1:
        return out
    rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    inside = MplPath(np.column_stack([u, v])).contains_points(np.column_stack([cc.ravel(), rr.ravel()]))
    out[r0:r1 + 1, c0:c1 + 1] = inside.reshape(rr.shape)
    return out


def contour_points(contour: pydicom.Dataset) -> np.ndarray:
    """ContourData (3006,0050) as a flat float64 array, parsed straight from the raw bytes.

    pydicom's DS conversion of long contours dominates RTSTRUCT reading; the raw value is a
    backslash-separated list of decimal strings (PS3.5 6.2, VR DS).
    """
    if "ContourData" not in contour:
        return np.zeros(0)
    raw = contour.get_item("ContourData")
    value = getattr(raw, "value", None)
    if isinstance(value, (bytes, bytearray)):
        try:
            return np.array(bytes(value).replace(b"\\", b" ").split(), dtype=np.float64)
        except ValueError:
            pass
    return np.asarray(contour.ContourData, dtype=np.float64).ravel()


def _roi_names(ds: pydicom.Dataset, source: str, problems: list[Problem]) -> dict[int, str]:
    """ROINumber -> ROIName of the StructureSetROISequence; items without a usable ROINumber are reported."""
    names: dict[int, str] = {}
    try:
        items = list(ds.get("StructureSetROISequence", []) or [])
    except Exception as exc:  # a damaged sequence
        problems.append(Problem(source, f"(3006,0020) 'Structure Set ROI Sequence' cannot be read "
                                f"({type(exc).__name__}: {exc}); contours named by number"))
        return names
    for k, r in enumerate(items):
        try:
            number = int(r.ROINumber)
        except Exception as exc:
            problems.append(Problem(source, f"item {k + 1} of (3006,0020) 'Structure Set ROI Sequence' has no usable "
                                    f"(3006,0022) 'ROI Number' ({type(exc).__name__}: {exc}); its contours cannot "
                                    "be named: not ingested"))
            continue
        try:
            name = r.get("ROIName", "")
        except Exception as exc:  # a wrong VR
            name = exc
        if not isinstance(name, str):
            problems.append(Problem(source, f"ROI number {number}: (3006,0026) 'ROI Name' is not text "
                                    f"({_short(name)}); this ROI is not ingested"))
            continue
        names[number] = name.strip() or f"ROI{number}"
        if not name.strip():
            problems.append(Problem(source, f"ROI number {number} has no (3006,0026) 'ROI Name'; stored as "
                                    f"{names[number]!r}", level="warning"))
    return names


def _short(value: object) -> str:
    text = f"{type(value).__name__}: {value}" if isinstance(value, Exception) else repr(value)
    return " ".join(text.split())[:80]


def _contour_polygon(contour: pydicom.Dataset) -> np.ndarray | None:
    """(n, 3) mm points of one CLOSED_PLANAR contour; None for other geometric types and fewer than 3 points.

    InputError when ContourData is unreadable, not finite or beyond POSITION_LIMIT_MM.
    """
    kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
    try:
        data = contour_points(contour)
    except Exception as exc:
        raise InputError(f"(3006,0050) 'Contour Data' cannot be read ({type(exc).__name__}: {exc})") from None
    if kind != "CLOSED_PLANAR" or data.size < 9 or data.size % 3:
        return None
    if not np.isfinite(data).all() or np.abs(data).max() > POSITION_LIMIT_MM:
        raise InputError(f"(3006,0050) 'Contour Data' holds a value that is not finite or beyond "
                         f"{POSITION_LIMIT_MM:g} mm")
    return data.reshape(-1, 3)


def rasterise_structure_set(ds: pydicom.Dataset, z_mm: np.ndarray, origins_mm: np.ndarray,
                            row_dir: np.ndarray, col_dir: np.ndarray, *, source: str = "RTSTRUCT"
                            ) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """Rasterise every ROI of a structure set on the model grid of a CT series.

    A damaged ROI (a contour whose points cannot be read or are not finite, a contour sequence that
    cannot be read, no ROI number) is left out whole and reported; the other ROIs are ingested.

    Parameters
    ----------
    ds : the RTSTRUCT data set.
    z_mm : (n,) CT slice positions along the normal, increasing.
    origins_mm : (n, 3) patient position of model pixel (0, 0) of each slice.
    row_dir, col_dir : (3,) unit vectors of the grid.
    source : the file name, for messages.

    Returns
    -------
    masks : ROI name -> (n, 128, 128) bool, only ROIs with at least one pixel.
    problems : errors (damaged ROIs, not ingested) and warnings (contours off the CT, unsupported
        geometric types).
    """
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    n = len(z_mm)
    tol = 0.5 * float(np.median(np.diff(z_mm))) if n > 1 else 1.0
    problems: list[Problem] = []
    names = _roi_names(ds, source, problems)
    masks: dict[str, np.ndarray] = {}
    off_ct, skipped_types = 0, 0
    contoured: set[int] = set()   # ROI numbers whose item has a Contour Sequence (maybe empty)
    try:
        rois = list(ds.get("ROIContourSequence", []) or [])
    except Exception as exc:
        problems.append(Problem(source, f"(3006,0039) 'ROI Contour Sequence' cannot be read ({type(exc).__name__}: "
                                f"{exc}); structures not ingested"))
        rois = []
    if names and not rois:
        problems.append(Problem(source, f"(3006,0039) 'ROI Contour Sequence' is missing or empty: the {len(names)} "
                                "ROI(s) have no contours; structures not ingested"))
    for k, roi in enumerate(rois):
        name = f"item {k + 1} of (3006,0039) 'ROI Contour Sequence'"
        try:
            number = int(roi.get("ReferencedROINumber", -1))
            if number not in names:  # never guessed: the contours of an ROI whose name is unknown
                raise InputError(f"its (3006,0084) 'Referenced ROI Number' ({number if number >= 0 else 'missing'}) "
                                 "names no usable ROI of (3006,0020) 'Structure Set ROI Sequence'")
            name = names[number]
            mask = np.zeros((n, GRID_SIZE, GRID_SIZE), dtype=bool)
            if "ContourSequence" in roi:   # present, even empty (an ROI drawn on no slice): as exported
                contoured.add(number)
            for contour in roi.get("ContourSequence", []) or []:
                pts = _contour_polygon(contour)
                if pts is None:
                    skipped_types += 1
                    continue
                w = float(np.mean(pts @ normal))
                k = int(np.argmin(np.abs(z_mm - w)))
                if abs(z_mm[k] - w) > tol:
                    off_ct += 1
                    continue
                rel = pts - origins_mm[k]
                mask[k] ^= polygon_mask(rel @ row_dir / GRID_SPACING_MM, rel @ col_dir / GRID_SPACING_MM)
        except Exception as exc:
            why = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            problems.append(Problem(source, f"ROI {name!r}: {why}; this ROI is not ingested" if name in names.values()
                                    else f"{name}: {why}; not ingested"))
            continue
        masks[name] = masks[name] ^ mask if name in masks else mask  # one name twice: as one ROI
    _warn_ignored(problems, source, [nm for num, nm in names.items() if num not in contoured] if rois else [],
                  off_ct, skipped_types)
    return {k: v for k, v in masks.items() if v.any()}, problems


def _warn_ignored(problems: list[Problem], source: str, empty: list[str], off_ct: int, skipped_types: int) -> None:
    """Warnings for what a structure set held but was not rasterised: named ROIs without a Contour
    Sequence (an empty one is an ROI drawn on no slice, not worth a warning), contours off the CT
    slices, contours that are not closed polygons."""
    if empty:
        problems.append(Problem(source, f"{len(empty)} ROI(s) have no (3006,0040) 'Contour Sequence': "
                                f"{', '.join(map(repr, sorted(empty)))}; not ingested", level="warning"))
    if off_ct:
        problems.append(Problem(source, f"{off_ct} contour(s) lie on no CT slice of the series; ignored",
                                level="warning"))
    if skipped_types:
        problems.append(Problem(source, f"{skipped_types} contour(s) are not CLOSED_PLANAR polygons "
                                "(points or open lines); ignored", level="warning"))
