"""RTDOSE: the dose grid in patient coordinates (Gy) and its trilinear resampling onto the model grid.

Gy = stored value x DoseGridScaling; frame positions from GridFrameOffsetVector, relative (first
element 0) or absolute (PS3.3 C.8.8.3.2); resampled trilinearly in patient coordinates, 0 Gy outside
the dose grid. Several RTDOSE for one frame of reference: :func:`choose_dose` prefers DoseSummationType
PLAN, then the largest grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ...core.grid import DOSE_MAX_GY, POSITION_LIMIT_MM, SPACING_RANGE_MM, PlaneGeometry
from ...errors import InputError
from .codec import decoded_pixels, describe, number, numbers, value_of
from .ct import orientation


@dataclass
class DoseGrid:
    """An RTDOSE grid in patient coordinates.

    Attributes
    ----------
    gy : (frames, rows, cols) float32, Gy.
    origin : (3,) mm, centre of the first voxel of the first frame (ImagePositionPatient).
    geometry : in-plane geometry.
    offsets : (frames,) mm along the normal from ``origin``, increasing.
    """

    gy: np.ndarray
    origin: np.ndarray
    geometry: PlaneGeometry
    offsets: np.ndarray

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Trilinear dose at patient points (..., 3) mm; 0 Gy outside the grid."""
        rel = points - self.origin
        c = rel @ self.geometry.row_dir / self.geometry.spacing[1]
        r = rel @ self.geometry.col_dir / self.geometry.spacing[0]
        return self._sample_index(r, c, rel @ self.geometry.normal)

    def sample_planes(self, origins_mm: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray,
                      size: int, spacing_mm: float) -> np.ndarray:
        """Trilinear dose on square grids of ``size`` x ``size`` pixels, one per plane.

        The same as :meth:`sample` at the pixel centres ``origin + j*spacing*row_dir +
        i*spacing*col_dir``, computed from the affine map (no (n, size, size, 3) array).

        Returns (n, size, size) float32 Gy.
        """
        g = self.geometry
        steps = np.arange(size, dtype=np.float64) * spacing_mm
        rel0 = np.asarray(origins_mm, dtype=np.float64) - self.origin           # (n, 3)
        axes = np.stack([g.col_dir, g.row_dir, g.normal])                         # r, c, w
        base = rel0 @ axes.T                                                      # (n, 3)
        d_j = axes @ np.asarray(row_dir, dtype=np.float64)                        # per column step
        d_i = axes @ np.asarray(col_dir, dtype=np.float64)                        # per row step
        fast = self._sample_planes_separable(base, d_i, d_j, steps)
        if fast is not None:
            return fast
        coord = (base[:, None, None, :] + steps[None, :, None, None] * d_i[None, None, None, :]
                 + steps[None, None, :, None] * d_j[None, None, None, :])        # (n, i, j, 3)
        r = coord[..., 0] / g.spacing[0]
        c = coord[..., 1] / g.spacing[1]
        return self._sample_index(r, c, coord[..., 2])

    def _sample_planes_separable(self, base: np.ndarray, d_i: np.ndarray, d_j: np.ndarray,
                                 steps: np.ndarray) -> np.ndarray | None:
        """:meth:`sample_planes` when the planes are parallel to the dose frames and their rows and
        columns run along the grid's axes (the usual case: axial CT, axial dose): each plane is then one
        blend of two frames, interpolated along one axis and then the other (two gathers of two rows
        or columns each), a few times faster than a trilinear lookup per pixel, with the same values.
        None otherwise.

        base : (n, 3) (r, c, w) mm of each plane's first pixel; d_i, d_j : (3,) mm per row / column step.
        """
        tol = 1e-9
        if abs(d_i[2]) > tol or abs(d_j[2]) > tol:
            return None
        if abs(d_i[1]) <= tol and abs(d_j[0]) <= tol:
            i_axis = 0                               # image rows run along dose rows
        elif abs(d_i[0]) <= tol and abs(d_j[1]) <= tol:
            i_axis = 1                               # transposed
        else:
            return None
        nf, nr, nc = self.gy.shape
        sizes, spacing = (nr, nc), self.geometry.spacing
        eps = 1e-3

        def taps(start: float, step: float, axis: int):
            """Lower and upper neighbour and their weights along one axis; weights 0 outside the grid
            (as :meth:`_sample_index`)."""
            n_axis = sizes[axis]
            x = (start + steps * step) / spacing[axis]
            ok = (x >= -eps) & (x <= n_axis - 1 + eps)
            xc = np.clip(x, 0, n_axis - 1)
            lo = np.minimum(np.floor(xc).astype(np.int64), max(n_axis - 2, 0))
            hi = np.minimum(lo + 1, n_axis - 1)
            frac = np.where(ok, xc - lo, 0.0)
            return lo, hi, np.where(ok, 1.0 - frac, 0.0), frac

        f, inside_f = self._frame_index(base[:, 2])
        out = np.zeros((len(base), len(steps), len(steps)), dtype=np.float32)
        for k in np.flatnonzero(inside_f):
            lo = min(int(np.floor(f[k])), max(nf - 2, 0))
            a = f[k] - lo
            frame = self.gy[lo].astype(np.float64) * (1.0 - a)
            if a > 0:
                frame += self.gy[min(lo + 1, nf - 1)].astype(np.float64) * a
            r_lo, r_hi, r_wlo, r_whi = taps(base[k, 0], (d_i if i_axis == 0 else d_j)[0], 0)
            c_lo, c_hi, c_wlo, c_whi = taps(base[k, 1], (d_j if i_axis == 0 else d_i)[1], 1)
            rows = frame[r_lo] * r_wlo[:, None] + frame[r_hi] * r_whi[:, None]          # (image axis, nc)
            plane = rows[:, c_lo] * c_wlo[None, :] + rows[:, c_hi] * c_whi[None, :]      # (along r, along c)
            out[k] = plane if i_axis == 0 else plane.T
        return out

    def _frame_index(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional frame index of offsets ``w`` (mm along the normal), and whether each lies within
        the frames (1e-2 mm of tolerance)."""
        if len(self.offsets) == 1:
            return np.zeros_like(w), np.abs(w - self.offsets[0]) <= 1e-2
        f = np.interp(w, self.offsets, np.arange(len(self.offsets), dtype=np.float64))
        return f, (w >= self.offsets[0] - 1e-2) & (w <= self.offsets[-1] + 1e-2)

    def _sample_index(self, r: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Trilinear dose at fractional (row, column) indices and offsets w (mm) along the normal."""
        nf, nr, nc = self.gy.shape
        eps = 1e-3
        f, inside_f = self._frame_index(w)
        inside = inside_f & (r >= -eps) & (r <= nr - 1 + eps) & (c >= -eps) & (c <= nc - 1 + eps)
        out = np.zeros(r.shape, dtype=np.float32)
        if inside.any():
            from scipy import ndimage  # start-up: scipy.ndimage only when resampling
            coords = np.stack([f[inside], np.clip(r[inside], 0, nr - 1), np.clip(c[inside], 0, nc - 1)])
            out[inside] = ndimage.map_coordinates(self.gy, coords, order=1, mode="nearest")
        return out


def read_dose(path: Path) -> DoseGrid:
    """Read an RTDOSE file into a :class:`DoseGrid` (Gy, patient mm).

    Raises InputError naming the element when the grid cannot be placed or is not in Gy.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read RTDOSE ({type(exc).__name__}: {exc})") from None
    units = str(value_of(ds, "DoseUnits", path, "GY")).upper()
    if units != "GY":
        raise InputError(f"{path}: {describe('DoseUnits')} is {units!r}; only GY can be converted to Gy; "
                         "dose not used")
    scaling = number(ds, "DoseGridScaling", path, lo=1e-12, hi=DOSE_MAX_GY,
                     why="stored values cannot be converted to Gy")
    row, col = orientation(ds, path)
    spacing = numbers(ds, "PixelSpacing", path, count=2, lo=SPACING_RANGE_MM[0], hi=SPACING_RANGE_MM[1], unit="mm")
    origin = numbers(ds, "ImagePositionPatient", path, count=3, lo=-POSITION_LIMIT_MM, hi=POSITION_LIMIT_MM,
                     unit="mm")
    frames = int(number(ds, "NumberOfFrames", path, default=1, lo=1, hi=65535))
    shape = (int(number(ds, "Rows", path, lo=1, hi=65535)), int(number(ds, "Columns", path, lo=1, hi=65535)))
    arr = decoded_pixels(ds, path, "dose not used")
    if arr.size != frames * shape[0] * shape[1]:
        raise InputError(f"{path}: pixel data holds {arr.size} values, {describe('NumberOfFrames')} x "
                         f"{describe('Rows')} x {describe('Columns')} = {frames} x {shape[0]} x {shape[1]}; "
                         "dose not used")
    arr = arr.reshape(frames, *shape)
    geometry = PlaneGeometry(row_dir=row, col_dir=col, spacing=(float(spacing[0]), float(spacing[1])),
                             shape=arr.shape[1:])
    if frames > 1 or "GridFrameOffsetVector" in ds:
        gfov = numbers(ds, "GridFrameOffsetVector", path, lo=-POSITION_LIMIT_MM, hi=POSITION_LIMIT_MM, unit="mm",
                       why="frames cannot be placed")
        if len(gfov) != frames:
            raise InputError(f"{path}: {describe('GridFrameOffsetVector')} has {len(gfov)} values for "
                             f"{frames} frames")
        if gfov[0] != 0.0:
            # absolute form: z coordinates of the frames (only defined for axial grids)
            gfov = gfov - float(origin @ geometry.normal)
        if len(np.unique(gfov)) != len(gfov):
            raise InputError(f"{path}: {describe('GridFrameOffsetVector')} holds one offset twice: frames cannot "
                             "be placed; dose not used")
    else:
        gfov = np.zeros(1)
    gy = arr.astype(np.float32) * np.float32(scaling)
    _check_gy(gy, path)
    order = np.argsort(gfov, kind="stable")
    return DoseGrid(gy=np.ascontiguousarray(gy[order]), origin=origin, geometry=geometry, offsets=gfov[order])


def _check_gy(gy: np.ndarray, path: Path) -> None:
    """InputError unless every dose value is finite and within [0, DOSE_MAX_GY] Gy."""
    if not np.isfinite(gy).all():
        raise InputError(f"{path}: stored value x {describe('DoseGridScaling')} is not finite for "
                         f"{int((~np.isfinite(gy)).sum())} voxel(s); dose not used")
    lo, hi = float(gy.min(initial=0.0)), float(gy.max(initial=0.0))
    if lo < 0 or hi > DOSE_MAX_GY:
        raise InputError(f"{path}: dose from {lo:.4g} to {hi:.4g} Gy (stored value x "
                         f"{describe('DoseGridScaling')}): outside [0, {DOSE_MAX_GY:g}] Gy; dose not used")


def choose_dose(candidates: list[tuple[Path, pydicom.Dataset]]) -> tuple[Path, pydicom.Dataset]:
    """Prefer DoseSummationType PLAN, then the largest grid, then the SOPInstanceUID (determinism)."""
    def key(item):
        _, ds = item
        try:
            size = int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
            return (str(ds.get("DoseSummationType", "")).upper() != "PLAN", -size, str(ds.get("SOPInstanceUID", "")))
        except Exception:  # a damaged header: the last choice (reading it then reports the damage)
            return (True, 1, "")
    return sorted(candidates, key=key)[0]

