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

from ...core.grid import GRID_SIZE, GRID_SPACING_MM
from ...core.records import Problem


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
    return np.asarray(contour.ContourData, dtype=np.float64)


def rasterise_structure_set(ds: pydicom.Dataset, z_mm: np.ndarray, origins_mm: np.ndarray,
                            row_dir: np.ndarray, col_dir: np.ndarray, *, source: str = "RTSTRUCT"
                            ) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """Rasterise every ROI of a structure set on the model grid of a CT series.

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
    problems : warnings (contours off the CT, unsupported geometric types).
    """
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    n = len(z_mm)
    tol = 0.5 * float(np.median(np.diff(z_mm))) if n > 1 else 1.0
    names = {int(r.ROINumber): str(r.get("ROIName", f"ROI{r.ROINumber}")).strip()
             for r in ds.get("StructureSetROISequence", [])}
    masks: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    off_ct, skipped_types = 0, 0
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.get("ReferencedROINumber", -1))
        name = names.get(number, f"ROI{number}")
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = contour_points(contour)
            if kind != "CLOSED_PLANAR" or data.size < 9 or data.size % 3:
                skipped_types += 1
                continue
            pts = data.reshape(-1, 3)
            w = float(np.mean(pts @ normal))
            k = int(np.argmin(np.abs(z_mm - w)))
            if abs(z_mm[k] - w) > tol:
                off_ct += 1
                continue
            rel = pts - origins_mm[k]
            u = rel @ row_dir / GRID_SPACING_MM
            v = rel @ col_dir / GRID_SPACING_MM
            if name not in masks:
                masks[name] = np.zeros((n, GRID_SIZE, GRID_SIZE), dtype=bool)
            masks[name][k] ^= polygon_mask(u, v)
    if off_ct:
        problems.append(Problem(source, f"{off_ct} contour(s) lie on no CT slice of the series; ignored",
                                level="warning"))
    if skipped_types:
        problems.append(Problem(source, f"{skipped_types} contour(s) are not CLOSED_PLANAR polygons "
                                "(points or open lines); ignored", level="warning"))
    return {k: v for k, v in masks.items() if v.any()}, problems
