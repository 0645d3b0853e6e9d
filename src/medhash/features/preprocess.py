"""Channels and their fixed preprocessing: model-grid arrays (HU, Gy) to network inputs.

Three channels exist, each mapped to a fixed range with fixed constants (never fitted to the data,
so that a query is preprocessed exactly as the archive was):

``ct``
    HU clipped to ``[CT_MIN_HU, CT_MAX_HU]`` = [-1000, 1000], divided by ``CT_SCALE_HU`` = 1000:
    values in [-1, 1] (air -1, water 0, dense bone 1). The raw-pixel reference of the mission
    (mission.md, "Reference points") uses the same window.
``dose``
    Gy divided by ``DOSE_MAX_GY`` = 80 and clipped to [0, 1] (fixed scale 0–80 Gy).
``geometry``
    Geometry images (:mod:`medhash.geometry.slices`: outside the body -1, organs at risk -0.5, the
    body 0.5 exp(-d / 30 mm) by the in-plane distance d to a target, targets level / 70 in [0.6, 1]),
    already in [-1, 1]: the identity, clipped to [-1, 1]. Computed from CT and contours, never a dose.

PSNR is reported on that scale: ``PSNR = 10 log10(range**2 / MSE)``, with range 2 for ``ct`` and
``geometry`` and 1 for ``dose`` (:data:`CHANNEL_RANGE`).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.grid import GRID_SIZE

CT_MIN_HU = -1000.0
"""Lower end of the CT window, HU (maps to -1)."""
CT_MAX_HU = 1000.0
"""Upper end of the CT window, HU (maps to +1)."""
CT_SCALE_HU = 1000.0
"""HU per unit of the network input."""
DOSE_MAX_GY = 80.0
"""Dose that maps to 1; the dose scale is fixed at 0–80 Gy."""

GEOMETRY_ENCODING = "medhash.geometry.slices revision 1"
"""The geometry images' encoding (:data:`medhash.geometry.slices.REVISION`), recorded in a geometry
model's config: a model trained on another encoding is refused."""

CHANNELS = ("ct", "dose", "geometry")
"""The channels a model can be trained on."""
CHANNEL_RANGE = {"ct": 2.0, "dose": 1.0, "geometry": 2.0}
"""Peak-to-peak range of a preprocessed channel, the ``range`` of PSNR."""
CHANNEL_UNIT = {"ct": "HU", "dose": "Gy", "geometry": "geometry code"}


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is known, else raise ValueError naming the known channels."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}: choose one of {', '.join(map(repr, CHANNELS))}")
    return channel


def preprocessing_constants(channel: str) -> dict:
    """The constants of ``channel``'s preprocessing, as recorded in a model's ``config.json``."""
    check_channel(channel)
    if channel == "ct":
        return {"channel": "ct", "unit": "HU", "formula": "clip(HU, min, max) / scale",
                "min": CT_MIN_HU, "max": CT_MAX_HU, "scale": CT_SCALE_HU, "range": CHANNEL_RANGE["ct"]}
    if channel == "geometry":
        return {"channel": "geometry", "unit": "geometry code", "formula": "clip(x, -1, 1)", "min": -1.0,
                "max": 1.0, "range": CHANNEL_RANGE["geometry"], "encoding": GEOMETRY_ENCODING}
    return {"channel": "dose", "unit": "Gy", "formula": "clip(Gy / max, 0, 1)",
            "max": DOSE_MAX_GY, "range": CHANNEL_RANGE["dose"]}


def check_shape(arr: np.ndarray) -> None:
    """ValueError unless ``arr`` is a (n, 128, 128) stack of model-grid slices."""
    if arr.ndim != 3 or arr.shape[1:] != (GRID_SIZE, GRID_SIZE):
        raise ValueError(f"expected slices on the model grid, shape (n, {GRID_SIZE}, {GRID_SIZE}) "
                         f"(or one ({GRID_SIZE}, {GRID_SIZE}) slice), got shape {arr.shape}")


def _as_stack(arrays: np.ndarray) -> np.ndarray:
    arr = np.asarray(arrays)
    if arr.ndim == 2:
        arr = arr[None]
    check_shape(arr)
    return arr


def preprocess(channel: str, arrays: np.ndarray) -> np.ndarray:
    """Network input of slices on the model grid.

    Parameters
    ----------
    channel : ``"ct"``, ``"dose"`` or ``"geometry"``.
    arrays : (n, 128, 128) (or one (128, 128) slice), HU for ``ct``, Gy for ``dose``, geometry images
        for ``geometry``; any real dtype.

    Returns
    -------
    (n, 1, 128, 128) float32: ``ct`` and ``geometry`` in [-1, 1], ``dose`` in [0, 1] (see the module docstring).
    NaN stays NaN.
    """
    check_channel(channel)
    arr = _as_stack(arrays)
    x = arr.astype(np.float32, copy=True)
    if channel == "ct":
        np.clip(x, np.float32(CT_MIN_HU), np.float32(CT_MAX_HU), out=x)
        x /= np.float32(CT_SCALE_HU)
    elif channel == "geometry":
        np.clip(x, np.float32(-1.0), np.float32(1.0), out=x)
    else:
        x /= np.float32(DOSE_MAX_GY)
        np.clip(x, np.float32(0.0), np.float32(1.0), out=x)
    return x[:, None]


def postprocess(channel: str, x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`preprocess` inside the window: (n, 1, 128, 128) → (n, 128, 128) HU, Gy or
    geometry code.

    Network outputs are clipped to the channel's range first ([-1, 1] or [0, 1]).
    """
    check_channel(channel)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    if channel == "ct":
        return np.clip(x, -1.0, 1.0) * np.float32(CT_SCALE_HU)
    if channel == "geometry":
        return np.clip(x, -1.0, 1.0)
    return np.clip(x, 0.0, 1.0) * np.float32(DOSE_MAX_GY)


def psnr(channel: str, mse: float) -> float:
    """PSNR in dB of a mean squared error on the preprocessed scale of ``channel`` (inf for 0)."""
    rng = CHANNEL_RANGE[check_channel(channel)]
    mse = float(mse)
    return math.inf if mse <= 0 else 10.0 * math.log10(rng * rng / mse)
