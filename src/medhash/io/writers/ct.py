"""CT series writer: a volume in HU as single-frame CT Image Storage files (:func:`write_ct_series`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.uid import CTImageStorage

from .common import Provenance, base_dataset, check_stack, ds_str, image_plane, orientation_axes, save

logger = logging.getLogger(__name__)


def write_ct_series(
    folder: str | os.PathLike[str], hu: np.ndarray, *, pixel_spacing: tuple[float, float],
    slice_positions_mm: Sequence[float] | np.ndarray, origin_xy_mm: Sequence[float] = (-250.0, -250.0),
    patient_id: str, study_uid: str, series_uid: str, frame_of_reference_uid: str,
    file_names: Sequence[str] | None = None, instance_numbers: Sequence[int] | None = None,
    rescale_slope: float = 1.0, rescale_intercept: float = -1024.0, series_description: str | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), sop_instance_uids: Sequence[str] | None = None,
    slice_thickness_mm: float | None = None, bits_stored: int = 16, provenance: Provenance,
) -> list[Path]:
    """Write a CT volume as a series of single-frame CT Image Storage files.

    Parameters
    ----------
    folder
        Destination folder (created if missing).
    hu
        ``(n_slices, rows, cols)`` Hounsfield units in position order. Stored pixel values are ``round((hu -
        rescale_intercept) / rescale_slope)``; with the defaults integer HU make an exact round trip.
    pixel_spacing
        ``(row spacing, column spacing)`` in mm (DICOM PixelSpacing order).
    slice_positions_mm
        ``(n_slices,)`` position of each slice along the slice normal, in mm.
    origin_xy_mm
        Position of the centre of the first pixel of a slice at normal position 0, in mm. Two numbers ``(x, y)``
        mean ``(x, y, 0)``; three numbers are used as given. Slice ``k`` gets ``ImagePositionPatient = origin +
        slice_positions_mm[k] * normal`` with ``normal`` the cross product of the row and column directions of
        ``orientation``; for the default axial orientation that is ``(x, y, slice_positions_mm[k])``.
    patient_id, study_uid, series_uid, frame_of_reference_uid
        Identifiers written as given. PatientName is always empty.
    file_names
        Optional ``n_slices`` file names (e.g. shuffled, to test that readers do not sort by name); default
        ``CT_{k:04d}.dcm``.
    instance_numbers
        Optional ``n_slices`` InstanceNumbers; default ``1 .. n_slices``.
    rescale_slope, rescale_intercept
        RescaleSlope and RescaleIntercept (HU = stored * slope + intercept).
    orientation
        ImageOrientationPatient: row direction cosines then column direction cosines.
    sop_instance_uids
        Optional ``n_slices`` SOPInstanceUIDs; default ``provenance.uid("CT", series_uid, k)`` for slice ``k``.
    slice_thickness_mm
        SliceThickness; default the median spacing of ``slice_positions_mm`` (1.0 for one slice).
    bits_stored
        BitsStored, 16 (default) or 12; the stored values must fit.
    provenance
        Manufacturer, descriptions, dates, times and how missing UIDs are made.
    series_description
        SeriesDescription (at most 64 characters); default ``"<provenance.series_label> CT"``.

    Returns
    -------
    list of Path
        The written files, in position order (index ``k`` holds ``hu[k]``).

    Raises
    ------
    ValueError
        On inconsistent shapes or stored values that do not fit in the pixel format.
    """
    hu = np.asarray(hu)
    z, origin, thickness = _check_arguments(
        hu, slice_positions_mm, pixel_spacing, rescale_slope, bits_stored, origin_xy_mm, slice_thickness_mm,
        {"file_names": file_names, "instance_numbers": instance_numbers, "sop_instance_uids": sop_instance_uids})
    _, _, normal = orientation_axes(orientation)
    stored, signed = _stored_values(hu, rescale_slope, rescale_intercept, bits_stored)
    paths: list[Path] = []
    for k in range(len(z)):
        sop_uid = str(sop_instance_uids[k]) if sop_instance_uids is not None else provenance.uid("CT", series_uid, k)
        ds = base_dataset(sop_class_uid=CTImageStorage, sop_instance_uid=sop_uid, modality="CT",
                          patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, series_number=1,
                          series_description=series_description or f"{provenance.series_label} CT",
                          provenance=provenance)
        image_plane(ds, frame_of_reference_uid=frame_of_reference_uid, position=origin + z[k] * normal,
                    orientation=orientation, pixel_spacing=pixel_spacing, shape=stored.shape[1:],
                    bits=(16, bits_stored), signed=signed)
        _ct_image(ds, int(instance_numbers[k]) if instance_numbers is not None else k + 1, stored[k], z[k],
                  thickness, (rescale_slope, rescale_intercept))
        paths.append(save(ds, Path(folder) / (file_names[k] if file_names is not None else f"CT_{k:04d}.dcm")))
    logger.debug("wrote %d CT slices (%d x %d) to %s", len(z), *stored.shape[1:], folder)
    return paths


def _ct_image(ds, number: int, stored: np.ndarray, z: float, thickness: float,
              rescale: tuple[float, float]) -> None:
    """Set the CT image module of one slice (its InstanceNumber, acquisition details, position along the
    normal ``z`` mm, SliceThickness, ``rescale`` = (slope, intercept) and pixel data)."""
    rescale_slope, rescale_intercept = rescale
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.SliceThickness = ds_str(thickness)
    ds.SliceLocation = ds_str(z)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = ds_str(rescale_intercept), ds_str(rescale_slope), "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = stored.tobytes()


def _check_arguments(hu: np.ndarray, slice_positions_mm, pixel_spacing, rescale_slope: float, bits_stored: int,
                     origin_xy_mm, slice_thickness_mm: float | None, per_slice: dict
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """ValueError for arguments that do not fit the volume; else the slice positions (mm), the origin
    as 3 numbers (mm) and the slice thickness (default: the median spacing; 1 mm for one slice)."""
    z = check_stack(hu, "hu", "n_slices", slice_positions_mm, "slice_positions_mm")
    n = hu.shape[0]
    if len(pixel_spacing) != 2:
        raise ValueError("pixel_spacing must be (row spacing, column spacing) in mm")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must not be 0")
    for name, seq in per_slice.items():
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} must have {n} entries, got {len(seq)}")
    file_names = per_slice["file_names"]
    if file_names is not None and len(set(file_names)) != n:
        raise ValueError("file_names must be distinct")
    if bits_stored not in (12, 16):
        raise ValueError(f"bits_stored must be 12 or 16, got {bits_stored}")
    origin = np.zeros(3)
    oxy = np.asarray(origin_xy_mm, dtype=np.float64)
    if oxy.shape not in ((2,), (3,)):
        raise ValueError(f"origin_xy_mm must have 2 or 3 numbers, got shape {oxy.shape}")
    origin[: oxy.size] = oxy
    if slice_thickness_mm is None:
        slice_thickness_mm = float(np.median(np.abs(np.diff(z)))) if n > 1 else 1.0
    return z, origin, slice_thickness_mm


def _stored_values(hu: np.ndarray, rescale_slope: float, rescale_intercept: float, bits_stored: int
                   ) -> tuple[np.ndarray, int]:
    """The stored pixel values (int16 when any is negative, else uint16) and PixelRepresentation;
    ValueError when they do not fit in ``bits_stored`` bits."""
    stored = np.round((hu.astype(np.float64) - rescale_intercept) / rescale_slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo < 0:
        signed, dtype = 1, np.dtype("<i2")
        limit_lo, limit_hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        signed, dtype = 0, np.dtype("<u2")
        limit_lo, limit_hi = 0, 2**bits_stored - 1
    if lo < limit_lo or hi > limit_hi:
        raise ValueError(
            f"stored CT values span [{lo:.0f}, {hi:.0f}], outside [{limit_lo}, {limit_hi}] for "
            f"BitsStored {bits_stored}; change rescale_slope / rescale_intercept"
        )
    stored = stored.astype(dtype)
    return stored, signed
