"""Deterministic synthetic head-and-neck phantoms written as real DICOM.

The demo and the tests of medhash go through the same DICOM path as a user's data: this module
builds simple analytic head-and-neck-like patients (body, fat, mandible, vertebra, spinal cord,
brainstem, airway, parotids, a PTV and a dose distribution around it) and writes them as a CT
series, an RTDOSE and an RTSTRUCT with the writers of :mod:`medhash.io.writers`, stamped with
:data:`DEMO_PROVENANCE`.

Tests build odd cases (shuffled file names, absolute frame offsets, tilted orientations, ...) with
those writers directly, passing ``provenance=DEMO_PROVENANCE``. Files that medhash writes for real
patients use :func:`medhash.io.writers.medhash_provenance`.

Conventions
-----------
* Those of :mod:`medhash.io.writers`: patient millimetres in DICOM's LPS coordinates, volumes
  ``(n_slices, rows, cols)`` in position order, ``pixel_spacing`` as ``(row spacing, column
  spacing)`` in mm. The phantoms are axial, so slice ``k`` lies at ``z = slice_positions_mm[k]``.
* Everything is deterministic: random choices come from ``np.random.default_rng([seed, index])``,
  UIDs from :func:`pydicom.uid.generate_uid` with fixed entropy sources (``"medhash.demo"`` first),
  dates and times are fixed (20240102 120000), Manufacturer is "medhash demo phantom".
  Writing the same phantom twice gives byte-identical files (with the same pydicom version, which
  is recorded in the file meta).
* No patient names: PatientName is always empty.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from .io import writers
from .io.writers import Provenance

__all__ = [
    "DEMO_PROVENANCE",
    "Phantom",
    "ROI_NAMES",
    "make_phantom",
    "write_demo_cohort",
    "write_phantom",
]

logger = logging.getLogger(__name__)

#: ROI names of the demo phantoms, in the order they are written to the RTSTRUCT.
ROI_NAMES: tuple[str, ...] = (
    "BODY",
    "PTV70",
    "SpinalCord",
    "Brainstem",
    "LeftParotid",
    "RightParotid",
    "Mandible",
)

# Root of the UID entropy, so demo UIDs never collide with those of another generator.
_UID_NAMESPACE = "medhash.demo"


def _uid(*parts: object) -> str:
    """A deterministic UID from the given parts (no time, no randomness)."""
    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, *(str(p) for p in parts)]))


#: Provenance of every demo file: fixed "acquisition" date and time and deterministic UIDs, so
#: that writing the same phantom twice gives byte-identical files.
DEMO_PROVENANCE = Provenance(
    manufacturer="medhash demo phantom",
    study_description="medhash synthetic head and neck",
    date="20240102",
    time="120000",
    uid=_uid,
    series_label="synthetic",
    structure_set_label="DEMO",
)

_HU_AIR = -1000
_HU_FAT = -100
_HU_SOFT = 40
_HU_GTV = 55
_HU_PAROTID = 5
_HU_MANDIBLE = 1100
_HU_CORTICAL = 1000
_HU_CANCELLOUS = 300
_HU_ARCH = 800
_HU_CORD = 30
_HU_BRAIN = 38
_HU_BRAINSTEM = 30
_PRESCRIPTION_GY = 70.0


# --------------------------------------------------------------------------------------------
# the phantom
# --------------------------------------------------------------------------------------------
@dataclass
class Phantom:
    """One synthetic head-and-neck patient; all geometry in patient mm (LPS, axial slices).

    Attributes
    ----------
    patient_id
        ``DEMO001`` for index 0, ...
    hu
        ``(n_slices, rows, cols)`` int16 HU in position order (increasing z). Air outside the
        body is exactly -1000 HU.
    pixel_spacing
        ``(row spacing, column spacing)`` of the CT in mm.
    origin_xy_mm
        ``(x, y)`` of the centre of pixel (0, 0) of every slice, mm.
    slice_positions_mm
        ``(n_slices,)`` float64 z of each slice, increasing, mm.
    dose_gy
        ``(n_frames, drows, dcols)`` float32 dose in Gy on its own coarser grid.
    dose_origin_mm
        ``(x, y, z)`` of the centre of the first dose voxel, mm.
    dose_pixel_spacing
        ``(row spacing, column spacing)`` of the dose grid in mm.
    dose_frame_offsets_mm
        ``(n_frames,)`` float64 relative z offsets of the dose frames (first 0), mm.
    contours
        ROI name -> list of ``(n_points, 3)`` float64 closed polygons in mm, one per slice
        where the ROI is present, in slice order, each with z equal to that slice's position.
    masks
        ROI name -> ``(n_slices, rows, cols)`` bool: the analytic shape each contour outlines,
        evaluated at the CT pixel centres (the polygon is a 48-64 point approximation of it).
    ptv_centre_mm, ptv_radii_mm
        Centre ``(x, y, z)`` and semi-axes ``(rx, ry, rz)`` of the PTV ellipsoid, mm.
    ptv_side
        ``"L"`` or ``"R"``: the patient side of the PTV (+x is the patient's left).
    body_centre_xy_mm
        ``(x, y)`` of the body axis, mm (not the image centre).
    prescription_gy
        Dose inside the PTV (70 Gy).
    slice_thickness_mm
        Spacing of the CT slices, mm.
    study_uid, ct_series_uid, frame_of_reference_uid
        Deterministic UIDs, derived from the seed and index.
    index, seed
        What made the phantom.
    """

    patient_id: str
    hu: np.ndarray
    pixel_spacing: tuple[float, float]
    origin_xy_mm: tuple[float, float]
    slice_positions_mm: np.ndarray
    dose_gy: np.ndarray
    dose_origin_mm: tuple[float, float, float]
    dose_pixel_spacing: tuple[float, float]
    dose_frame_offsets_mm: np.ndarray
    contours: dict[str, list[np.ndarray]]
    masks: dict[str, np.ndarray] = field(repr=False)
    ptv_centre_mm: tuple[float, float, float]
    ptv_radii_mm: tuple[float, float, float]
    ptv_side: str
    body_centre_xy_mm: tuple[float, float]
    prescription_gy: float
    slice_thickness_mm: float
    study_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    index: int
    seed: int

    @property
    def dose_z_mm(self) -> np.ndarray:
        """``(n_frames,)`` absolute z of each dose frame, mm."""
        return self.dose_origin_mm[2] + self.dose_frame_offsets_mm


def _round(x: float, decimals: int = 2) -> float:
    return float(round(float(x), decimals))


def _ellipse_mask(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, a: float,
                  b: float) -> np.ndarray:
    """``(rows, cols)`` bool: pixel centres ``(xs[c], ys[r])`` inside the axis-aligned ellipse."""
    return (((ys - cy) / b) ** 2)[:, None] + (((xs - cx) / a) ** 2)[None, :] <= 1.0


def _ellipse_polygon(cx: float, cy: float, a: float, b: float, z: float, n: int) -> np.ndarray:
    t = 2.0 * np.pi * np.arange(n) / n
    pts = np.stack([cx + a * np.cos(t), cy + b * np.sin(t), np.full(n, z)], axis=1)
    return np.round(pts, 2)


def _half_ring_polygon(cx: float, cy: float, a: float, b: float, width: float, z: float,
                       n: int) -> np.ndarray:
    """Outline of the anterior (y <= cy) half of an elliptical ring of the given width."""
    t = np.linspace(np.pi, 2.0 * np.pi, n // 2)
    outer = np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)
    inner = np.stack([cx + (a - width) * np.cos(t[::-1]), cy + (b - width) * np.sin(t[::-1])],
                     axis=1)
    pts = np.concatenate([outer, inner])
    return np.round(np.column_stack([pts, np.full(len(pts), z)]), 2)


def _ellipsoid_section(z: float, cz: float, hz: float) -> float:
    """Scale factor of an ellipsoid's cross-section at z (0 outside)."""
    s = 1.0 - ((z - cz) / hz) ** 2
    return math.sqrt(s) if s > 0 else 0.0


def make_phantom(index: int, seed: int = 0, *, rows: int = 256) -> Phantom:
    """Build one deterministic synthetic head-and-neck patient.

    Parameters
    ----------
    index
        Patient index (0-based); the patient id is ``DEMO{index + 1:03d}``. The PTV is on the
        patient's left for even ``index + seed`` and on the right otherwise.
    seed
        Seed of every random choice (with ``index``: ``np.random.default_rng([seed, index])``).
    rows
        Rows and columns of the square CT slices (>= 32). The field of view stays about
        490-510 mm, so the pixel spacing is about 500 / rows mm (1.9-2.0 mm at 256).

    Returns
    -------
    Phantom
        CT of 40-60 axial slices 2.5 or 3.0 mm apart starting between -90 and -60 mm, with the
        body centre up to 30 mm off the image centre; a dose grid of 3-4 mm pixels and 3 mm
        frames that covers the body and all slices but not the whole CT field of view, with its
        origin off the CT pixel centres; contours of :data:`ROI_NAMES`.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if rows < 32:
        raise ValueError(f"rows must be >= 32, got {rows}")
    rng = np.random.default_rng([seed, index])
    g = _draw_ct_grid(rng, rows)
    an = _draw_anatomy(rng, g.z, g.image_centre_y, side=1 if (index + seed) % 2 == 0 else -1)
    n_slices = len(g.z)
    hu = np.full((n_slices, rows, rows), _HU_AIR, dtype=np.int16)
    masks = {name: np.zeros((n_slices, rows, rows), dtype=bool) for name in ROI_NAMES}
    contours: dict[str, list[np.ndarray]] = {name: [] for name in ROI_NAMES}
    for k, zk in enumerate(g.z):
        _paint_soft_tissue(an, g, k, float(zk), hu[k], masks, contours)
        _paint_bones_and_airway(an, g, k, float(zk), hu[k], masks, contours)
    # mild noise inside the body only (air outside stays exactly -1000)
    noise = np.round(rng.normal(0.0, 3.0, size=hu.shape)).astype(np.int16)
    hu = np.where(masks["BODY"], hu + noise, hu).astype(np.int16)
    dose, dose_origin, dsp, offsets = _dose_grid(rng, an)
    return Phantom(
        patient_id=f"DEMO{index + 1:03d}", hu=hu, pixel_spacing=(g.spacing, g.spacing),
        origin_xy_mm=(g.origin_x, g.origin_y), slice_positions_mm=g.z, dose_gy=dose, dose_origin_mm=dose_origin,
        dose_pixel_spacing=(dsp, dsp), dose_frame_offsets_mm=offsets, contours=dict(contours), masks=masks,
        ptv_centre_mm=an.ptv_centre, ptv_radii_mm=an.ptv_radii, ptv_side="L" if an.side > 0 else "R",
        body_centre_xy_mm=(an.cx, an.cy), prescription_gy=_PRESCRIPTION_GY, slice_thickness_mm=g.thickness,
        study_uid=_uid("study", seed, index), ct_series_uid=_uid("ct-series", seed, index),
        frame_of_reference_uid=_uid("frame-of-reference", seed, index), index=index, seed=seed,
    )


@dataclass(frozen=True)
class _CTGrid:
    """Where the CT pixels of a phantom lie: slice positions and pixel centres, mm."""

    spacing: float
    thickness: float
    z: np.ndarray             # (n_slices,)
    image_centre_y: float
    origin_x: float
    origin_y: float
    xs: np.ndarray            # (cols,) x of the pixel centres
    ys: np.ndarray            # (rows,) y of the pixel centres


def _draw_ct_grid(rng: np.random.Generator, rows: int) -> _CTGrid:
    """The CT geometry: field of view 487-510 mm, 40-60 slices 2.5 or 3.0 mm apart, image centre moved
    up to 20 mm along y (the first random draws of a phantom, in this order)."""
    fov = float(rng.uniform(487.0, 510.0))
    spacing = _round(fov / rows, 4)
    cols = rows
    n_slices = int(rng.integers(40, 61))
    thickness = float(rng.choice([2.5, 3.0]))
    z0 = round(float(rng.uniform(-90.0, -60.0)) * 2.0) / 2.0  # a multiple of 0.5 mm
    z = np.round(z0 + thickness * np.arange(n_slices), 2)
    image_centre_y = _round(rng.uniform(-20.0, 20.0), 1)
    origin_x = _round(-(cols - 1) * spacing / 2.0)
    origin_y = _round(image_centre_y - (rows - 1) * spacing / 2.0)
    return _CTGrid(spacing=spacing, thickness=thickness, z=z, image_centre_y=image_centre_y, origin_x=origin_x,
                   origin_y=origin_y, xs=origin_x + spacing * np.arange(cols), ys=origin_y + spacing * np.arange(rows))


@dataclass(frozen=True)
class _Anatomy:
    """The drawn parameters of a phantom's anatomy (mm; ``u`` is the height in the CT, 0 to 1)."""

    cx: float
    cy: float
    a0: float                 # lateral semi-axis of the neck
    b0: float                 # antero-posterior semi-axis
    fat: float
    zmin: float
    zmax: float
    side: int                 # +1: PTV on the patient's left
    ptv_radii: tuple[float, float, float]
    ptv_centre: tuple[float, float, float]
    u_brainstem: float
    parotid_cz: float
    parotid_hz: float
    parotid_ab: tuple[float, float]
    mandible_u: tuple[float, float]
    mandible_width: float
    airway_r: float
    airway_phase: float
    vert_r: float
    gtv_scale: float = 0.6

    def u_of(self, zz: float) -> float:
        """0 at the lowest slice, 1 at the highest."""
        return (zz - self.zmin) / (self.zmax - self.zmin)

    def axes(self, u: float) -> tuple[float, float]:
        """Semi-axes (lateral, antero-posterior) of the body at height ``u``."""
        return self.a0 * (0.92 + 0.16 * u), self.b0 * (0.95 + 0.10 * u)


def _draw_anatomy(rng: np.random.Generator, z: np.ndarray, image_centre_y: float, side: int) -> _Anatomy:
    """Body centre and size, PTV, parotids, mandible, airway and vertebra (the draws after the grid's)."""
    cx = _round(rng.uniform(-30.0, 30.0))
    cy = _round(image_centre_y + rng.uniform(-30.0, 30.0))
    a0 = float(rng.uniform(68.0, 82.0))
    b0 = float(rng.uniform(58.0, 70.0))
    fat = float(rng.uniform(4.0, 8.0))
    zmin, zmax = float(z[0]), float(z[-1])
    extent = zmax - zmin
    u_ptv = float(rng.uniform(0.38, 0.58))
    ptv_radii = (_round(rng.uniform(18.0, 26.0)), _round(rng.uniform(18.0, 26.0)),
                 _round(rng.uniform(18.0, 28.0)))
    a_at_ptv = a0 * (0.92 + 0.16 * u_ptv)
    ptv_centre = (_round(cx + side * 0.38 * a_at_ptv), _round(cy - 0.08 * b0), _round(zmin + u_ptv * extent))
    return _Anatomy(
        cx=cx, cy=cy, a0=a0, b0=b0, fat=fat, zmin=zmin, zmax=zmax, side=side, ptv_radii=ptv_radii,
        ptv_centre=ptv_centre, u_brainstem=float(rng.uniform(0.76, 0.82)),
        parotid_cz=zmin + float(rng.uniform(0.68, 0.78)) * extent, parotid_hz=float(rng.uniform(20.0, 28.0)),
        parotid_ab=(float(rng.uniform(10.0, 13.0)), float(rng.uniform(14.0, 18.0))),
        mandible_u=(float(rng.uniform(0.30, 0.38)), float(rng.uniform(0.62, 0.70))),
        mandible_width=float(rng.uniform(7.0, 9.0)), airway_r=float(rng.uniform(6.0, 9.0)),
        airway_phase=float(rng.uniform(0.0, 2.0 * np.pi)), vert_r=float(rng.uniform(12.0, 15.0)))


def _paint_soft_tissue(an: _Anatomy, g: _CTGrid, k: int, zk: float, sl: np.ndarray, masks: dict,
                       contours: dict) -> None:
    """Slice ``k`` (HU ``sl``, in place): body and fat, the PTV with a denser GTV, the parotids."""
    xs, ys, cx, cy = g.xs, g.ys, an.cx, an.cy
    a, b = an.axes(an.u_of(zk))
    body = _ellipse_mask(xs, ys, cx, cy, a, b)
    sl[body] = _HU_FAT
    sl[_ellipse_mask(xs, ys, cx, cy, a - an.fat, b - an.fat)] = _HU_SOFT
    masks["BODY"][k] = body
    contours["BODY"].append(_ellipse_polygon(cx, cy, a, b, zk, 64))
    (px0, py0, pz0), radii = an.ptv_centre, an.ptv_radii
    s = _ellipsoid_section(zk, pz0, radii[2])
    if s * min(radii[:2]) > 1.5:
        pa, pb = radii[0] * s, radii[1] * s
        masks["PTV70"][k] = _ellipse_mask(xs, ys, px0, py0, pa, pb)
        contours["PTV70"].append(_ellipse_polygon(px0, py0, pa, pb, zk, 48))
        sl[_ellipse_mask(xs, ys, px0, py0, an.gtv_scale * pa, an.gtv_scale * pb)] = _HU_GTV
    # parotids (ellipsoids, lateral and slightly posterior)
    s = _ellipsoid_section(zk, an.parotid_cz, an.parotid_hz)
    if s * min(an.parotid_ab) > 1.5:
        pa, pb = an.parotid_ab[0] * s, an.parotid_ab[1] * s
        for name, sgn in (("LeftParotid", 1.0), ("RightParotid", -1.0)):
            px, py = cx + sgn * 0.62 * a, cy + 0.2 * b
            m = _ellipse_mask(xs, ys, px, py, pa, pb)
            sl[m] = _HU_PAROTID
            masks[name][k] = m
            contours[name].append(_ellipse_polygon(px, py, pa, pb, zk, 48))


def _paint_bones_and_airway(an: _Anatomy, g: _CTGrid, k: int, zk: float, sl: np.ndarray, masks: dict,
                            contours: dict) -> None:
    """Slice ``k`` (in place): the mandible; the vertebra with the cord, or above ``u_brainstem`` the skull
    base with the brainstem; the airway."""
    xs, ys, cx, cy = g.xs, g.ys, an.cx, an.cy
    u = an.u_of(zk)
    a, b = an.axes(u)
    if an.mandible_u[0] <= u <= an.mandible_u[1]:  # anterior half of an elliptical bone ring
        ma, mb, w = 0.70 * a, 0.75 * b, an.mandible_width
        m = _ellipse_mask(xs, ys, cx, cy, ma, mb) & ~_ellipse_mask(xs, ys, cx, cy, ma - w, mb - w) & (ys <= cy)[:, None]
        sl[m] = _HU_MANDIBLE
        masks["Mandible"][k] = m
        contours["Mandible"].append(_half_ring_polygon(cx, cy, ma, mb, w, zk, 64))
    vy = cy + 0.18 * b
    canal_y = vy + an.vert_r + 8.0
    if u < an.u_brainstem:  # vertebral body, posterior arch, spinal canal with the cord
        sl[_ellipse_mask(xs, ys, cx, vy, an.vert_r, an.vert_r)] = _HU_CORTICAL
        sl[_ellipse_mask(xs, ys, cx, vy, an.vert_r - 2.5, an.vert_r - 2.5)] = _HU_CANCELLOUS
        sl[_ellipse_mask(xs, ys, cx, canal_y, 12.0, 11.0)] = _HU_ARCH
        sl[_ellipse_mask(xs, ys, cx, canal_y, 7.5, 7.0)] = _HU_SOFT
        m = _ellipse_mask(xs, ys, cx, canal_y, 5.0, 4.5)
        sl[m] = _HU_CORD
        masks["SpinalCord"][k] = m
        contours["SpinalCord"].append(_ellipse_polygon(cx, canal_y, 5.0, 4.5, zk, 32))
        # airway: a tube anterior to the spine that wanders a little with z
        ax = cx + 3.0 * math.sin(2.0 * np.pi * zk / 60.0 + an.airway_phase)
        ay = cy - 0.3 * b + 2.0 * math.cos(2.0 * np.pi * zk / 45.0 + an.airway_phase)
        sl[_ellipse_mask(xs, ys, ax, ay, an.airway_r, an.airway_r * 0.8)] = _HU_AIR
    else:  # skull base: a bone shell inside the fat with brain tissue in it, the brainstem
        sl[_ellipse_mask(xs, ys, cx, cy, a - an.fat - 1.0, b - an.fat - 1.0)] = _HU_CORTICAL
        sl[_ellipse_mask(xs, ys, cx, cy, a - an.fat - 7.0, b - an.fat - 7.0)] = _HU_BRAIN
        by = canal_y - 4.0
        m = _ellipse_mask(xs, ys, cx, by, 13.0, 10.0)
        sl[m] = _HU_BRAINSTEM
        masks["Brainstem"][k] = m
        contours["Brainstem"].append(_ellipse_polygon(cx, by, 13.0, 10.0, zk, 48))


def _dose_grid(rng: np.random.Generator, an: _Anatomy) -> tuple[np.ndarray, tuple, float, np.ndarray]:
    """A dose grid coarser than the CT, with an offset origin, that covers the body (not the whole CT
    field of view): (Gy (frames, rows, cols) float32, origin mm, pixel spacing mm, frame offsets mm)."""
    cx, cy, a0, b0, zmin, zmax = an.cx, an.cy, an.a0, an.b0, an.zmin, an.zmax
    dsp = _round(rng.uniform(3.0, 4.0), 1)
    frame_step = 3.0
    margin = float(rng.uniform(10.0, 16.0))
    a_max, b_max = a0 * 1.08, b0 * 1.05
    dox = _round(cx - a_max - margin + rng.uniform(0.0, 1.0))
    doy = _round(cy - b_max - margin + rng.uniform(0.0, 1.0))
    dcols = int(math.ceil((cx + a_max + margin - dox) / dsp)) + 1
    drows = int(math.ceil((cy + b_max + margin - doy) / dsp)) + 1
    doz = _round(zmin - rng.uniform(0.2, 2.0))
    n_frames = int(math.ceil((zmax - doz) / frame_step)) + 1
    offsets = np.round(frame_step * np.arange(n_frames), 2)
    DZ, DY, DX = np.meshgrid(doz + offsets, doy + dsp * np.arange(drows), dox + dsp * np.arange(dcols), indexing="ij")
    (px, py, pz), radii = an.ptv_centre, an.ptv_radii
    rho = np.sqrt(((DX - px) / radii[0]) ** 2 + ((DY - py) / radii[1]) ** 2 + ((DZ - pz) / radii[2]) ** 2)
    r_eff = float(np.prod(radii) ** (1.0 / 3.0))
    dist = np.maximum(rho - 1.0, 0.0) * r_eff  # approximate distance outside the PTV surface
    sigma = float(rng.uniform(10.0, 15.0))
    falloff = _PRESCRIPTION_GY * np.exp(-(dist**2) / (2.0 * sigma**2))
    bath = float(rng.uniform(5.0, 9.0)) * np.exp(-(((DZ - pz) / 50.0) ** 2))
    uz = (DZ - zmin) / (zmax - zmin)
    body_a = a0 * (0.92 + 0.16 * np.clip(uz, 0.0, 1.0))
    body_b = b0 * (0.95 + 0.10 * np.clip(uz, 0.0, 1.0))
    in_body = ((DX - cx) / body_a) ** 2 + ((DY - cy) / body_b) ** 2 <= 1.0
    dose = np.where(in_body, np.maximum(falloff, bath), 0.0).astype(np.float32)
    return dose, (dox, doy, doz), dsp, offsets


_DEMO_PATTERNS = ("CT_*.dcm", "RD_*.dcm", "RS_*.dcm")


def write_phantom(phantom: Phantom, folder: str | os.PathLike[str]) -> dict[str, object]:
    """Write one phantom as ``CT_*.dcm``, ``RD_<patient_id>.dcm`` and ``RS_<patient_id>.dcm``.

    Parameters
    ----------
    phantom
        The patient to write.
    folder
        Destination folder (created if missing).

    Returns
    -------
    dict
        ``{"ct": list of Path in position order, "rtdose": Path, "rtstruct": Path}``.
    """
    folder = Path(folder)
    common = {"frame_of_reference_uid": phantom.frame_of_reference_uid, "patient_id": phantom.patient_id,
              "study_uid": phantom.study_uid, "provenance": DEMO_PROVENANCE}
    ct = writers.write_ct_series(folder, phantom.hu, pixel_spacing=phantom.pixel_spacing,
                                 slice_positions_mm=phantom.slice_positions_mm, origin_xy_mm=phantom.origin_xy_mm,
                                 series_uid=phantom.ct_series_uid, slice_thickness_mm=phantom.slice_thickness_mm,
                                 **common)
    rd = writers.write_rtdose(folder / f"RD_{phantom.patient_id}.dcm", phantom.dose_gy,
                              origin_mm=phantom.dose_origin_mm, pixel_spacing=phantom.dose_pixel_spacing,
                              frame_offsets_mm=phantom.dose_frame_offsets_mm, **common)
    rs = writers.write_rtstruct(folder / f"RS_{phantom.patient_id}.dcm", phantom.contours, ct_files_or_uids=ct,
                                series_uid_of_ct=phantom.ct_series_uid, **common)
    return {"ct": ct, "rtdose": rd, "rtstruct": rs}


def write_demo_cohort(
    dest: str | os.PathLike[str], n_patients: int = 6, seed: int = 0, rows: int = 256
) -> list[Path]:
    """Write ``n_patients`` synthetic patients as DICOM under ``dest/<patient_id>/``.

    Each folder holds ``CT_0000.dcm ...``, ``RD_<patient_id>.dcm`` and ``RS_<patient_id>.dcm``
    of :func:`make_phantom` ``(i, seed, rows=rows)`` for ``i = 0 .. n_patients - 1`` (patient ids
    ``DEMO001 ...``). Demo files left in a patient folder by an earlier run (``CT_*.dcm``,
    ``RD_*.dcm``, ``RS_*.dcm``) are removed first; other files are left alone. Running twice
    gives byte-identical files.

    Parameters
    ----------
    dest
        Destination folder (created if missing).
    n_patients
        Number of patients (>= 1).
    seed
        Seed of the cohort.
    rows
        Rows and columns of the CT slices.

    Returns
    -------
    list of Path
        The patient folders, in patient order.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    dest = Path(dest)
    folders: list[Path] = []
    for i in range(n_patients):
        phantom = make_phantom(i, seed, rows=rows)
        folder = dest / phantom.patient_id
        if folder.is_dir():
            stale = sorted(p for pattern in _DEMO_PATTERNS for p in folder.glob(pattern))
            if stale:
                logger.info("removing %d demo files of an earlier run from %s", len(stale), folder)
            for p in stale:
                p.unlink()
        write_phantom(phantom, folder)
        logger.info("wrote demo patient %s: %d CT slices, %d dose frames", phantom.patient_id,
                    phantom.hu.shape[0], phantom.dose_gy.shape[0])
        folders.append(folder)
    return folders
