"""A patient's planning geometry on the model grid: targets by level, organs, body, distance maps.

Everything here reads CT and contours only, never a dose: it is what a query has at planning time.

Distances are in mm on the model grid (3.906 mm in-plane, the patient's slice spacing along z),
computed in 3-D by exact Euclidean distance transforms (:func:`scipy.ndimage.distance_transform_edt`)
inside the body's bounding box:

* ``d1``, ``d2``, ``d3``: signed distance to the targets of the highest, second and third prescription
  level (negative inside), clipped to +/- :data:`CLIP_MM`; a level the patient lacks reads
  :data:`CLIP_MM` everywhere. Levels below the third join the third.
* ``d_any``: signed distance to the union of all targets.
* ``depth``: distance below the body surface (:func:`body_mask`), 0 outside.
* ``d_inplane``: distance to any target on the same slice (2-D), :data:`CLIP_MM` on slices without one:
  beams are collimated along z, so dose falls off faster out of the targets' slices than beside them.
* ``kernel5`` ... ``kernel40``: the prescription map (each target voxel holds its level in Gy, the highest
  where levels overlap) blurred by a Gaussian of sigma 5, 10, 20 and 40 mm (zero outside the grid): a
  crude dose calculation whose scales stand for penumbra, scatter and the beams' spread.
* ``d_parotid``, ``d_cord``: signed distance to either parotid and to the spinal cord, the organs whose
  sparing shapes most head-and-neck plans (:data:`CLIP_MM` where the patient has none).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.grid import BODY_HU, GRID_SPACING_MM
from .names import structure_roles

CLIP_MM = 150.0
N_LEVELS = 3
KERNEL_SIGMAS_MM = (5.0, 10.0, 20.0, 40.0)
SPARED_ORGANS = {"d_parotid": ("Parotid_L", "Parotid_R"), "d_cord": ("SpinalCord",)}


@dataclass
class PatientGeometry:
    """One patient's CT and contours, in z order.

    Attributes
    ----------
    patient_id : archive id, or None for a DICOM query.
    z_mm : (n,) slice positions, increasing.
    spacing_mm : (z, row, column) voxel size, mm.
    ct : (n, 128, 128) float32 HU; body : (n, 128, 128) bool, the patient (:func:`body_mask`).
    levels : prescription levels in Gy, highest first (at most :data:`N_LEVELS`).
    targets : (len(levels), n, 128, 128) bool, the union of the targets at each level.
    organs : TG-263 name -> (n, 128, 128) bool.
    source_names : TG-263 name or ``"target <Gy>"`` -> the structure names it was read from.
    """
    patient_id: str | None
    z_mm: np.ndarray
    spacing_mm: tuple[float, float, float]
    ct: np.ndarray
    body: np.ndarray
    levels: list[float]
    targets: np.ndarray
    organs: dict[str, np.ndarray]
    source_names: dict[str, list[str]] = field(default_factory=dict)
    _maps: dict | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct.shape)

    @property
    def voxel_mm3(self) -> float:
        dz, dy, dx = self.spacing_mm
        return float(dz * dy * dx)

    @property
    def any_target(self) -> np.ndarray:
        """(n, 128, 128) bool, every target."""
        return self.targets.any(axis=0) if len(self.targets) else np.zeros(self.shape, dtype=bool)

    def maps(self) -> dict[str, np.ndarray]:
        """The distance maps of the module docstring, name -> (n, 128, 128) float32 mm (computed once)."""
        if self._maps is None:
            self._maps = distance_maps(self)
        return self._maps


def from_arrays(ct: np.ndarray, z_mm: np.ndarray, masks: dict[str, np.ndarray], *,
                patient_id: str | None = None, targets: dict[str, float] | None = None) -> PatientGeometry:
    """A :class:`PatientGeometry` from (n, 128, 128) CT (HU) with its (n,) z and its structure masks.

    Slices are put in z order; ``targets`` overrides levels read from names
    (:func:`medhash.geometry.names.structure_roles`)."""
    order = np.argsort(np.asarray(z_mm, dtype=np.float64), kind="stable")
    z = np.asarray(z_mm, dtype=np.float64)[order]
    ct = np.asarray(ct, dtype=np.float32)[order]
    dz = float(np.median(np.diff(z))) if len(z) > 1 else 2.5
    dz = dz if dz > 0 else 2.5
    levels_names, organ_names = structure_roles(masks, targets)
    levels = list(levels_names)[:N_LEVELS]
    t = np.zeros((len(levels),) + ct.shape, dtype=bool)
    sources: dict[str, list[str]] = {}
    for lv, names in levels_names.items():
        j = min(levels.index(lv) if lv in levels else N_LEVELS - 1, len(levels) - 1)
        for n in names:
            t[j] |= np.asarray(masks[n], dtype=bool)[order]
        sources.setdefault(f"target {levels[j]:g}", []).extend(names)
    organs = {canon: np.asarray(masks[n], dtype=bool)[order] for canon, n in organ_names.items()}
    sources.update({canon: [n] for canon, n in organ_names.items()})
    return PatientGeometry(patient_id, z, (dz, GRID_SPACING_MM, GRID_SPACING_MM), ct, body_mask(ct, t.any(axis=0)),
                           levels, t, organs, sources)


def body_mask(ct: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """The patient: HU > -500 with the holes of each slice filled (airways, sinuses and the oral cavity
    get dose too), joined with the targets. (n, 128, 128) HU -> bool."""
    from scipy import ndimage  # start-up: scipy.ndimage only when geometry is computed

    body = np.stack([ndimage.binary_fill_holes(s) for s in np.asarray(ct) > BODY_HU]) if len(ct) else \
        np.zeros(np.shape(ct), dtype=bool)
    return body | targets if targets is not None else body


def _box(body: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    """The bounding box of the body, ``margin`` voxels wider, as slices (the whole array without body)."""
    if not body.any():
        return tuple(slice(0, s) for s in body.shape)
    out = []
    for ax in range(3):
        hit = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != ax)))
        out.append(slice(max(0, hit[0] - margin), min(body.shape[ax], hit[-1] + margin + 1)))
    return tuple(out)


def signed_distance(mask: np.ndarray, spacing_mm, clip: float = CLIP_MM) -> np.ndarray:
    """Signed Euclidean distance (mm) to a mask's surface, negative inside, clipped to +/- ``clip``;
    ``clip`` everywhere for an empty mask. (n, H, W) bool -> float32."""
    from scipy import ndimage  # start-up: scipy.ndimage only when distances are computed

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, clip, dtype=np.float32)
    out = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    out -= ndimage.distance_transform_edt(mask, sampling=spacing_mm)
    return np.clip(out, -clip, clip).astype(np.float32)


def distance_maps(g: PatientGeometry) -> dict[str, np.ndarray]:
    """The maps of the module docstring, name -> (n, 128, 128) float32 (mm; Gy for the kernels)."""
    from scipy import ndimage  # start-up: as signed_distance

    box = _box(g.body | g.any_target)
    out = {}

    def full(crop: np.ndarray, fill: float) -> np.ndarray:
        a = np.full(g.shape, fill, dtype=np.float32)
        a[box] = crop
        return a

    for j in range(N_LEVELS):
        m = g.targets[j][box] if j < len(g.targets) else np.zeros(g.body[box].shape, dtype=bool)
        out[f"d{j + 1}"] = full(signed_distance(m, g.spacing_mm), CLIP_MM)
    out["d_any"] = full(signed_distance(g.any_target[box], g.spacing_mm), CLIP_MM)
    depth = ndimage.distance_transform_edt(g.body[box], sampling=g.spacing_mm)
    out["depth"] = full(np.clip(depth, 0, CLIP_MM).astype(np.float32), 0.0)
    out["d_inplane"] = _inplane_distance(g)
    out.update(_kernels(g))
    for name, organs in SPARED_ORGANS.items():
        m = np.zeros(g.shape, dtype=bool)
        for organ in organs:
            if organ in g.organs:
                m |= g.organs[organ]
        out[name] = full(signed_distance(m[box], g.spacing_mm), CLIP_MM)
    return out


def _inplane_distance(g: PatientGeometry) -> np.ndarray:
    """``d_inplane``: per slice, the 2-D distance (mm) to any target, clipped; the clip without one."""
    from scipy import ndimage  # start-up: as signed_distance

    anyt = g.any_target
    out = np.full(g.shape, CLIP_MM, dtype=np.float32)
    for i in np.flatnonzero(anyt.any(axis=(1, 2))):
        out[i] = np.minimum(ndimage.distance_transform_edt(~anyt[i], sampling=g.spacing_mm[1:]), CLIP_MM)
    return out


def _kernels(g: PatientGeometry) -> dict[str, np.ndarray]:
    """``kernel5`` ... ``kernel40``: the prescription map (Gy) blurred at each of :data:`KERNEL_SIGMAS_MM`."""
    from scipy import ndimage  # start-up: as signed_distance

    presc = np.zeros(g.shape, dtype=np.float32)
    for level, m in zip(g.levels, g.targets):
        np.maximum(presc, np.where(m, np.float32(level), np.float32(0)), out=presc)
    sp = np.asarray(g.spacing_mm, dtype=np.float64)
    return {f"kernel{s:g}": ndimage.gaussian_filter(presc, s / sp, mode="constant").astype(np.float32)
            for s in KERNEL_SIGMAS_MM}
