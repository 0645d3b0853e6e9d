"""Geometry images: one single-channel picture per slice of where the targets and the organs are.

A geometry image is what the ``geometry`` auto-encoder channel sees (:mod:`medhash.features`): a
(128, 128) float32 array on the model grid in [-1, 1], computed from the CT and the contours only,
never from a dose, so that a patient has it at planning time. Each pixel holds, in this order of
precedence (the later rule wins where two apply):

======================  ==========================================================================
where                   value
======================  ==========================================================================
outside the body        :data:`OUTSIDE` = -1. The body is :func:`medhash.geometry.maps.body_mask`:
                        HU > -500 with each slice's holes filled, joined with the targets.
elsewhere in the body   ``NEAR_MAX * exp(-d / FALLOFF_MM)`` = 0.5 exp(-d / 30 mm), where d is the
                        in-plane distance (mm, same slice, between pixel centres, 3.906 mm a pixel)
                        to the nearest target pixel; 0 on a slice without a target.
an organ at risk        :data:`ORGAN` = -0.5: any TG-263 organ
                        (:func:`medhash.geometry.names.structure_roles`), inside or outside the body.
inside a target         ``clip(level / TARGET_REF_GY, TARGET_MIN, TARGET_MAX)`` = level / 70 clipped
                        to [0.6, 1] (70 Gy reads 1, 56 Gy 0.8, 42 Gy and below 0.6); where targets
                        overlap, the highest level.
======================  ==========================================================================

Levels come from the structure names (``PTV70``, ``PTV_5600``) or from ``targets`` (name -> Gy,
which wins); which names are organs and targets is decided on the patient's whole structure set, so a
slice's image does not depend on which other slices are computed with it. Every rule is per slice
(2-D), so any subset of a patient's slices can be computed alone.

:data:`REVISION` numbers this encoding; it is recorded in a geometry model's preprocessing constants
(:func:`medhash.features.preprocess.preprocessing_constants`), so a model trained on another encoding
is refused.
"""
from __future__ import annotations

import numpy as np

from ..core.grid import GRID_SIZE, GRID_SPACING_MM
from .maps import body_mask
from .names import structure_roles

REVISION = 1
"""Version of the encoding of the module docstring (bumped whenever a rule or constant changes)."""
OUTSIDE = -1.0
"""Value outside the body."""
ORGAN = -0.5
"""Value inside an organ at risk."""
NEAR_MAX = 0.5
"""Value in the body at distance 0 from a target (the limit at its edge)."""
FALLOFF_MM = 30.0
"""In-plane distance (mm) over which the value in the body falls by a factor e."""
TARGET_REF_GY = 70.0
"""Level (Gy) that reads 1 inside a target."""
TARGET_MIN, TARGET_MAX = 0.6, 1.0
"""Range of the values inside targets (level / 70 clipped to it)."""


def _level_map(masks: dict[str, np.ndarray], levels: dict[float, list[str]], shape) -> np.ndarray:
    """(n, 128, 128) float32: the highest target level (Gy) at each pixel, 0 outside the targets."""
    out = np.zeros(shape, dtype=np.float32)
    for level, names in levels.items():
        for name in names:
            np.maximum(out, np.where(np.asarray(masks[name], dtype=bool), np.float32(level), np.float32(0)), out=out)
    return out


def _near_targets(targets: np.ndarray) -> np.ndarray:
    """(n, 128, 128) float32 ``NEAR_MAX * exp(-d / FALLOFF_MM)``, d the in-plane distance (mm) to the
    nearest target pixel of the same slice; 0 on slices without a target."""
    from scipy import ndimage  # start-up: scipy.ndimage only when geometry images are computed

    out = np.zeros(targets.shape, dtype=np.float32)
    for i in np.flatnonzero(targets.any(axis=(1, 2))):
        d = ndimage.distance_transform_edt(~targets[i], sampling=(GRID_SPACING_MM, GRID_SPACING_MM))
        out[i] = NEAR_MAX * np.exp(-d / FALLOFF_MM)
    return out


def geometry_images(ct: np.ndarray, masks: dict[str, np.ndarray],
                    targets: dict[str, float] | None = None) -> np.ndarray:
    """Geometry images (module docstring) of slices.

    Parameters
    ----------
    ct : (n, 128, 128) HU (or one (128, 128) slice).
    masks : structure name -> (n, 128, 128) bool (or (128, 128)), the patient's whole structure set
        (a structure that misses these slices may be all False).
    targets : name -> level in Gy, overriding levels read from names (:func:`~medhash.geometry.parse_targets`).

    Returns
    -------
    (n, 128, 128) float32 in [-1, 1].
    """
    ct = np.asarray(ct, dtype=np.float32)
    one = ct.ndim == 2
    ct = ct[None] if one else ct
    if ct.ndim != 3 or ct.shape[1:] != (GRID_SIZE, GRID_SIZE):
        raise ValueError(f"expected CT slices of shape (n, {GRID_SIZE}, {GRID_SIZE}), got {ct.shape}")
    masks = {name: (np.asarray(m, dtype=bool)[None] if one else np.asarray(m, dtype=bool)) for name, m in masks.items()}
    for name, m in masks.items():
        if m.shape != ct.shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, the CT {ct.shape}")
    levels, organs = structure_roles(masks, targets)
    level = _level_map(masks, levels, ct.shape)
    in_target = level > 0
    out = np.full(ct.shape, np.float32(OUTSIDE), dtype=np.float32)
    body = body_mask(ct, in_target)
    out[body] = _near_targets(in_target)[body]
    for name in organs.values():
        out[masks[name]] = np.float32(ORGAN)
    out[in_target] = np.clip(level[in_target] / np.float32(TARGET_REF_GY), TARGET_MIN, TARGET_MAX)
    return out[0] if one else out


def archive_geometry_images(archive, rows, *, structure_sets: list | None = None) -> np.ndarray:
    """Geometry images of archive rows, in the order given.

    Parameters
    ----------
    archive : :class:`medhash.Archive`.
    rows : (m,) archive rows, of any patients, in any order.
    structure_sets : ``archive.structure_sets()`` when the caller already has it (it tells each
        patient's whole structure set; read once per call otherwise).

    Returns
    -------
    (m, 128, 128) float32 in [-1, 1]: for each patient, :func:`geometry_images` of its rows' CT and
    structure masks, with its roles (targets, organs) decided on all its structures.
    """
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    out = np.empty((len(rows), GRID_SIZE, GRID_SIZE), dtype=np.float32)
    if not len(rows):
        return out
    sets = archive.structure_sets() if structure_sets is None else structure_sets
    pid_of = archive.table()["patient_id"]
    pids = pid_of[rows]
    for pid in sorted(set(pids)):
        pos = np.flatnonzero(pids == pid)
        names = set().union(*(sets[r] for r in np.flatnonzero(pid_of == pid)))
        masks = archive.structure_masks(rows[pos])
        for name in names - set(masks):
            masks[name] = np.zeros((len(pos), GRID_SIZE, GRID_SIZE), dtype=bool)
        out[pos] = geometry_images(np.asarray(archive.ct[rows[pos]], dtype=np.float32), masks)
    return out
