"""RTDOSE writer: a 3D dose grid in Gy as one multi-frame RT Dose Storage file (:func:`write_rtdose`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.uid import RTDoseStorage

from .common import Provenance, base_dataset, check_stack, ds_list, ds_str, image_plane, orientation_axes, save

logger = logging.getLogger(__name__)

_FRAME_INCREMENT_GRID_FRAME_OFFSET = 0x3004000C


def write_rtdose(
    path: str | os.PathLike[str], dose_gy: np.ndarray, *, origin_mm: Sequence[float],
    pixel_spacing: tuple[float, float], frame_offsets_mm: Sequence[float] | np.ndarray,
    frame_of_reference_uid: str, patient_id: str, study_uid: str, summation_type: str = "PLAN",
    absolute_offsets: bool = False, dose_grid_scaling: float | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), series_uid: str | None = None,
    sop_instance_uid: str | None = None, provenance: Provenance, series_description: str | None = None,
    study_date: str | None = None, study_time: str | None = None,
) -> Path:
    """Write a 3D dose grid as a multi-frame RT Dose Storage file.

    Parameters
    ----------
    path
        Destination file (its folder is created if missing).
    dose_gy
        ``(n_frames, rows, cols)`` dose in Gy, non-negative. Frame ``k`` lies at ``origin_mm + frame_offsets_mm[k] *
        normal``.
    origin_mm
        ImagePositionPatient ``(x, y, z)`` of the centre of the first voxel of the first frame, mm.
    pixel_spacing
        ``(row spacing, column spacing)`` in mm.
    frame_offsets_mm
        ``(n_frames,)`` offsets of the frames along the normal relative to the first one, mm; the first must be 0.
    frame_of_reference_uid, patient_id, study_uid
        Identifiers written as given.
    summation_type
        DoseSummationType (PLAN, BEAM, FRACTION, ...).
    absolute_offsets
        If True, GridFrameOffsetVector holds the absolute positions along the normal (``origin . normal + offsets``;
        for axial images the z of each frame) instead of the relative offsets, the older form some planning systems
        write.
    dose_grid_scaling
        DoseGridScaling (Gy per stored unit); default chosen so that the maximum dose maps near 2**31. Stored values
        are ``round(dose_gy / scaling)`` as uint32.
    orientation
        ImageOrientationPatient.
    series_uid, sop_instance_uid
        Optional UIDs; default ``provenance.uid("RTDOSE-series" or "RTDOSE", study_uid, frame_of_reference_uid, file
        name)``.
    provenance
        Manufacturer, descriptions, dates, times and how missing UIDs are made.
    series_description
        SeriesDescription (at most 64 characters); default ``"<provenance.series_label> dose"``.
    study_date, study_time
        StudyDate / StudyTime of the study the dose joins (``study_uid``'s own); default the provenance's date and
        time.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        On inconsistent shapes, negative doses, a first offset that is not 0, or a scaling with which the dose does
        not fit in 32 bits.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    offsets, origin, gfov = _check_grid(dose, frame_offsets_mm, origin_mm, orientation, absolute_offsets)
    path, (stored, scaling_str) = Path(path), _stored_values(dose, dose_grid_scaling)
    series_uid = series_uid or provenance.uid("RTDOSE-series", study_uid, frame_of_reference_uid, path.name)
    sop_uid = sop_instance_uid or provenance.uid("RTDOSE", study_uid, frame_of_reference_uid, path.name)
    ds = base_dataset(sop_class_uid=RTDoseStorage, sop_instance_uid=sop_uid, modality="RTDOSE",
                      patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, series_number=3,
                      series_description=series_description or f"{provenance.series_label} dose",
                      provenance=provenance, study_date=study_date, study_time=study_time)
    ds.InstanceNumber = 1
    image_plane(ds, frame_of_reference_uid=frame_of_reference_uid, position=origin, orientation=orientation,
                pixel_spacing=pixel_spacing, shape=dose.shape[1:], bits=(32, 32), signed=0)
    ds.SliceThickness = ds_str(abs(offsets[1] - offsets[0])) if len(offsets) > 1 else ""
    ds.NumberOfFrames = len(offsets)
    ds.FrameIncrementPointer = _FRAME_INCREMENT_GRID_FRAME_OFFSET
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", summation_type
    ds.GridFrameOffsetVector = ds_list(gfov)
    ds.DoseGridScaling, ds.PixelData = scaling_str, stored.tobytes()
    save(ds, path)
    logger.debug("wrote RTDOSE %s (%d x %d x %d, max %.3f Gy)", path, *dose.shape, float(dose.max()))
    return path


def _check_grid(dose: np.ndarray, frame_offsets_mm, origin_mm, orientation: Sequence[float],
                absolute_offsets: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame offsets, origin, GridFrameOffsetVector) as float64 arrays; ValueError when they or the dose
    do not fit. The vector is absolute (``origin . normal + offsets``) with ``absolute_offsets``."""
    offsets = check_stack(dose, "dose_gy", "n_frames", frame_offsets_mm, "frame_offsets_mm")
    if offsets[0] != 0.0:
        raise ValueError(f"frame_offsets_mm must start at 0 (relative offsets), got {offsets[0]}")
    origin = np.asarray(origin_mm, dtype=np.float64)
    if origin.shape != (3,):
        raise ValueError(f"origin_mm must be (x, y, z), got shape {origin.shape}")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        raise ValueError("dose_gy must be finite and non-negative")
    _, _, normal = orientation_axes(orientation)
    if not absolute_offsets:
        return offsets, origin, offsets
    gfov = float(origin @ normal) + offsets
    if gfov[0] == 0.0:
        logger.warning("absolute GridFrameOffsetVector starts at 0: readers will take it as "
                       "relative offsets (the same thing here)")
    return offsets, origin, gfov


def _stored_values(dose: np.ndarray, dose_grid_scaling: float | None) -> tuple[np.ndarray, str]:
    """The stored values (uint32) and DoseGridScaling as written (DS); by default the maximum dose
    maps near 2**31. ValueError when the dose does not fit."""
    max_dose = float(dose.max())
    if dose_grid_scaling is None:
        dose_grid_scaling = max_dose / 2.0**31 if max_dose > 0 else 1.0
    scaling_str = ds_str(dose_grid_scaling)
    scaling = float(scaling_str)  # the value a reader sees
    if scaling <= 0:
        raise ValueError(f"dose_grid_scaling must be positive, got {dose_grid_scaling}")
    stored = np.round(dose / scaling)
    if stored.max() > 2**32 - 1:
        raise ValueError(
            f"dose up to {max_dose} Gy does not fit in uint32 with DoseGridScaling {scaling}"
        )
    stored = stored.astype("<u4")
    return stored, scaling_str
