"""Query images that are not DICOM: NPY arrays and PNG pictures.

* **NPY**: a 2D array (``np.save``), HU for a CT query, Gy for a dose query. A 128 x 128 array is
  taken as lying on the model grid (3.906 mm pixels, centred on the body); any other shape is
  resized to 128 x 128 (bilinear) as if it spanned the model grid's 499.97 mm field of view.
* **PNG**: 8-bit grey (colour is converted to grey): CT grey 0..255 maps linearly to -1000..1000 HU
  (the models' window); dose grey 0..255 maps to 0..80 Gy. Resized like NPY.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from ..errors import InputError
from ..core.grid import GRID_SIZE

PNG_CT_RANGE = (-1000.0, 1000.0)
PNG_DOSE_RANGE = (0.0, 80.0)


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".npy", ".png")


def read_image(path: str | Path, kind: str = "ct") -> np.ndarray:
    """A query image as (128, 128) float32: HU (``kind="ct"``) or Gy (``kind="dose"``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path}: not a readable NPY array ({exc})") from None
        arr = np.squeeze(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"{path}: expected a 2D numeric array, found shape {arr.shape} dtype {arr.dtype}")
        img = arr.astype(np.float32)
    elif suffix == ".png":
        try:
            with Image.open(path) as im:
                grey = np.asarray(im.convert("L"), dtype=np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path}: not a readable PNG ({exc})") from None
        lo, hi = PNG_CT_RANGE if kind == "ct" else PNG_DOSE_RANGE
        img = lo + grey / 255.0 * (hi - lo)
    else:
        raise InputError(f"{path}: unsupported query file type {suffix or '(none)'}; use DICOM, PNG or NPY")
    if not np.isfinite(img).all():
        raise InputError(f"{path}: the image has NaN or infinite values")
    if img.shape != (GRID_SIZE, GRID_SIZE):
        zoom = (GRID_SIZE / img.shape[0], GRID_SIZE / img.shape[1])
        img = ndimage.zoom(img, zoom, order=1, grid_mode=True, mode="nearest")[:GRID_SIZE, :GRID_SIZE]
    return np.ascontiguousarray(img, dtype=np.float32)
