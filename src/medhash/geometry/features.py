"""Fixed-length numbers from a patient's geometry: per-voxel features and a per-patient descriptor.

**Voxel features** (:data:`VOXEL_FEATURES`, one row per voxel), what a knowledge-based dose model
reads: the maps of :mod:`medhash.geometry.maps` (distances in mm, blurred prescriptions in Gy), the three prescription levels (Gy, 0
for a level the patient lacks), one flag per TG-263 organ of :data:`medhash.geometry.names.ORGANS`,
the position relative to the centroid of the highest-level target (``rz`` along z, ``ry`` towards
posterior rows, ``rx`` towards higher columns; mm), the CT number (HU, clipped to [-1000, 2000]) and
the volumes of the highest-level target and of all targets (log(1 + cm^3)).

**Patient descriptor** (:func:`patient_descriptor`), what patient search by geometry compares: for each
TG-263 organ, a presence flag and its overlap-volume histogram (OVH) -- the fraction of the organ
within r mm of any target, r in :data:`OVH_RADII_MM`, and within r of the highest-level target --
then each level's target volume (log(1 + cm^3) / 5) and level (Gy / 70), and the offset of the targets'
centroid from the body's (mm / 100, z, row, column). Two patients compare by the Euclidean distance
of their descriptors; all parts lie roughly in [0, 1] so none dominates.
"""
from __future__ import annotations

import numpy as np

from .maps import N_LEVELS, PatientGeometry
from .names import ORGANS

MAP_NAMES = ("d1", "d2", "d3", "d_any", "depth", "d_inplane", "kernel5", "kernel10", "kernel20", "kernel40",
             "d_parotid", "d_cord")
ORGAN_FLAGS = tuple(f"organ {name}" for name in ORGANS)
VOXEL_FEATURES = MAP_NAMES + ("l1", "l2", "l3") + ORGAN_FLAGS + ("rz", "ry", "rx", "hu", "vol1", "vol_any")
OVH_RADII_MM = (0.0, 5.0, 10.0, 20.0, 30.0, 50.0)


def _cc(mask: np.ndarray, g: PatientGeometry) -> float:
    return float(np.count_nonzero(mask) * g.voxel_mm3 / 1000.0)


def target_centroid(g: PatientGeometry) -> np.ndarray:
    """(3,) voxel coordinates (z, row, column) of the highest-level target's centroid (else of all
    targets, else of the body, else the grid's centre)."""
    for m in (g.targets[0] if len(g.targets) else None, g.any_target, g.body):
        if m is not None and m.any():
            return np.array([ix.mean() for ix in np.nonzero(m)], dtype=np.float64)
    return (np.array(g.shape, dtype=np.float64) - 1) / 2


def voxel_features(g: PatientGeometry, voxels: np.ndarray) -> np.ndarray:
    """(m, len(VOXEL_FEATURES)) float32 features of the voxels with flat indexes ``voxels``
    ((m,) into the (n, 128, 128) grid)."""
    voxels = np.asarray(voxels, dtype=np.int64)
    maps = g.maps()
    cols = [maps[name].ravel()[voxels] for name in MAP_NAMES]
    for j in range(N_LEVELS):
        cols.append(np.full(len(voxels), g.levels[j] if j < len(g.levels) else 0.0, dtype=np.float32))
    for name in ORGANS:
        m = g.organs.get(name)
        cols.append(m.ravel()[voxels].astype(np.float32) if m is not None else np.zeros(len(voxels), np.float32))
    zi, yi, xi = np.unravel_index(voxels, g.shape)
    c = target_centroid(g)
    dz, dy, dx = g.spacing_mm
    cols += [(zi - c[0]) * dz, (yi - c[1]) * dy, (xi - c[2]) * dx]
    cols.append(np.clip(g.ct.ravel()[voxels], -1000, 2000))
    vol1 = np.log1p(_cc(g.targets[0], g)) if len(g.targets) else 0.0
    cols += [np.full(len(voxels), vol1), np.full(len(voxels), np.log1p(_cc(g.any_target, g)))]
    return np.stack([np.asarray(col, dtype=np.float32) for col in cols], axis=1)


def descriptor_names() -> list[str]:
    """The names of :func:`patient_descriptor`'s entries, in order."""
    names = []
    for organ in ORGANS:
        names.append(f"{organ} present")
        names += [f"{organ} OVH any {r:g}mm" for r in OVH_RADII_MM]
        names += [f"{organ} OVH high {r:g}mm" for r in OVH_RADII_MM]
    names += [f"target volume {j + 1}" for j in range(N_LEVELS)] + [f"level {j + 1}" for j in range(N_LEVELS)]
    return names + ["target offset z", "target offset row", "target offset column"]


def patient_descriptor(g: PatientGeometry) -> np.ndarray:
    """(len(descriptor_names()),) float32 descriptor of the module docstring."""
    maps = g.maps()
    out: list[float] = []
    for organ in ORGANS:
        m = g.organs.get(organ)
        if m is None or not m.any():
            out += [0.0] * (1 + 2 * len(OVH_RADII_MM))
            continue
        out.append(1.0)
        for key in ("d_any", "d1"):
            d = maps[key][m]
            out += [float(np.mean(d <= r)) for r in OVH_RADII_MM]
    for j in range(N_LEVELS):
        out.append(np.log1p(_cc(g.targets[j], g)) / 5.0 if j < len(g.targets) else 0.0)
    out += [g.levels[j] / 70.0 if j < len(g.levels) else 0.0 for j in range(N_LEVELS)]
    body_c = np.array([ix.mean() for ix in np.nonzero(g.body)]) if g.body.any() else target_centroid(g)
    offset = (target_centroid(g) - body_c) * np.array(g.spacing_mm) / 100.0
    out += [float(x) for x in offset]
    return np.asarray(out, dtype=np.float32)
