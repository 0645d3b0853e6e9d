"""Deterministic synthetic head-and-neck phantoms written as real DICOM.

The demo and the tests of medhash go through the same DICOM path as a user's data: this module
builds simple analytic head-and-neck-like patients (body, fat, mandible, vertebra, spinal cord,
brainstem, airway, parotids, a PTV and a dose distribution around it) and writes them as a CT
series, an RTDOSE and an RTSTRUCT with pydicom.

It also offers the low-level writers (:func:`write_ct_series`, :func:`write_rtdose`,
:func:`write_rtstruct`) on their own, so that tests can build odd cases (shuffled file names,
absolute frame offsets, tilted orientations, ...).

Conventions
-----------
* Patient coordinates are DICOM's (LPS): x towards the patient's left, y towards posterior,
  z towards the head, all in millimetres.
* Volumes are ``(n_slices, rows, cols)`` in *position order* (increasing position along the slice
  normal). With the default axial orientation ``(1, 0, 0, 0, 1, 0)`` the centre of pixel
  ``(k, r, c)`` lies at ``x = origin_x + c * col_spacing``, ``y = origin_y + r * row_spacing``,
  ``z = slice_positions_mm[k]``.
* ``pixel_spacing`` is always ``(row spacing, column spacing)`` in mm, the order of DICOM
  PixelSpacing (row spacing = distance between adjacent rows, i.e. along y for axial images).
* Everything is deterministic: random choices come from ``np.random.default_rng([seed, index])``,
  UIDs from :func:`pydicom.uid.generate_uid` with fixed entropy sources, dates and times are fixed.
  Writing the same phantom twice gives byte-identical files (with the same pydicom version, which
  is recorded in the file meta).
* No patient names: PatientName is always empty.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTDoseStorage,
    RTStructureSetStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "Phantom",
    "ROI_NAMES",
    "make_phantom",
    "write_ct_series",
    "write_demo_cohort",
    "write_phantom",
    "write_rtdose",
    "write_rtstruct",
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

# Fixed "acquisition" date and time of every demo file (determinism).
_DATE = "20240102"
_TIME = "120000"
_MANUFACTURER = "medhash demo phantom"
# Root of the UID entropy, so demo UIDs never collide with those of another generator.
_UID_NAMESPACE = "medhash.demo"
# Detached Study Management SOP Class, the conventional class of RTReferencedStudySequence items.
_STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
_FRAME_INCREMENT_GRID_FRAME_OFFSET = 0x3004000C

_ROI_COLOURS: dict[str, tuple[int, int, int]] = {
    "BODY": (0, 255, 0),
    "PTV70": (255, 0, 0),
    "SpinalCord": (255, 255, 0),
    "Brainstem": (0, 255, 255),
    "LeftParotid": (0, 0, 255),
    "RightParotid": (255, 0, 255),
    "Mandible": (255, 255, 255),
}

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
# small helpers
# --------------------------------------------------------------------------------------------
def _ds(value: float) -> str:
    """Format one number as a DICOM DS string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def _ds_list(values: np.ndarray | Sequence[float]) -> list[str]:
    return [_ds(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _uid(*parts: object) -> str:
    """A deterministic UID from the given parts (no time, no randomness)."""
    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, *(str(p) for p in parts)]))


def _orientation_axes(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal from ImageOrientationPatient.

    Raises
    ------
    ValueError
        If the six numbers are not two orthonormal vectors.
    """
    o = np.asarray(orientation, dtype=np.float64)
    if o.shape != (6,):
        raise ValueError(f"orientation must have 6 numbers, got shape {o.shape}")
    row_dir, col_dir = o[:3], o[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1.0) > 1e-6
        or abs(np.linalg.norm(col_dir) - 1.0) > 1e-6
        or abs(float(row_dir @ col_dir)) > 1e-6
    ):
        raise ValueError(f"orientation {tuple(o)} is not two orthonormal direction cosines")
    return row_dir, col_dir, np.cross(row_dir, col_dir)


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base_dataset(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    series_number: int,
    series_description: str,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules shared by all writers."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = _DATE
    ds.InstanceCreationTime = _TIME
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = _DATE
    ds.SeriesDate = _DATE
    ds.ContentDate = _DATE
    ds.StudyTime = _TIME
    ds.SeriesTime = _TIME
    ds.ContentTime = _TIME
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = _MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "medhash synthetic head and neck"
    ds.SeriesDescription = series_description
    ds.PatientName = ""
    ds.PatientID = str(patient_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------
# low-level writers
# --------------------------------------------------------------------------------------------
def write_ct_series(
    folder: str | os.PathLike[str],
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float],
    slice_positions_mm: Sequence[float] | np.ndarray,
    origin_xy_mm: Sequence[float] = (-250.0, -250.0),
    patient_id: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    file_names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    sop_instance_uids: Sequence[str] | None = None,
    slice_thickness_mm: float | None = None,
    bits_stored: int = 16,
) -> list[Path]:
    """Write a CT volume as a series of single-frame CT Image Storage files.

    Parameters
    ----------
    folder
        Destination folder (created if missing).
    hu
        ``(n_slices, rows, cols)`` Hounsfield units in position order. Stored pixel values are
        ``round((hu - rescale_intercept) / rescale_slope)``; with the defaults integer HU make an
        exact round trip.
    pixel_spacing
        ``(row spacing, column spacing)`` in mm (DICOM PixelSpacing order).
    slice_positions_mm
        ``(n_slices,)`` position of each slice along the slice normal, in mm.
    origin_xy_mm
        Position of the centre of the first pixel of a slice at normal position 0, in mm. Two
        numbers ``(x, y)`` mean ``(x, y, 0)``; three numbers are used as given. Slice ``k`` gets
        ``ImagePositionPatient = origin + slice_positions_mm[k] * normal`` with ``normal`` the
        cross product of the row and column directions of ``orientation``; for the default axial
        orientation that is ``(x, y, slice_positions_mm[k])``.
    patient_id, study_uid, series_uid, frame_of_reference_uid
        Identifiers written as given. PatientName is always empty.
    file_names
        Optional ``n_slices`` file names (e.g. shuffled, to test that readers do not sort by
        name); default ``CT_{k:04d}.dcm``.
    instance_numbers
        Optional ``n_slices`` InstanceNumbers; default ``1 .. n_slices``.
    rescale_slope, rescale_intercept
        RescaleSlope and RescaleIntercept (HU = stored * slope + intercept).
    orientation
        ImageOrientationPatient: row direction cosines then column direction cosines.
    sop_instance_uids
        Optional ``n_slices`` SOPInstanceUIDs; default derived deterministically from
        ``series_uid`` and the slice index.
    slice_thickness_mm
        SliceThickness; default the median spacing of ``slice_positions_mm`` (1.0 for one slice).
    bits_stored
        BitsStored, 16 (default) or 12; the stored values must fit.

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
    if hu.ndim != 3:
        raise ValueError(f"hu must be (n_slices, rows, cols), got shape {hu.shape}")
    n, rows, cols = hu.shape
    z = np.asarray(slice_positions_mm, dtype=np.float64)
    if z.shape != (n,):
        raise ValueError(f"slice_positions_mm must have {n} values, got shape {z.shape}")
    if len(pixel_spacing) != 2:
        raise ValueError("pixel_spacing must be (row spacing, column spacing) in mm")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must not be 0")
    for name, seq in (("file_names", file_names), ("instance_numbers", instance_numbers),
                      ("sop_instance_uids", sop_instance_uids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} must have {n} entries, got {len(seq)}")
    if file_names is not None and len(set(file_names)) != n:
        raise ValueError("file_names must be distinct")
    if bits_stored not in (12, 16):
        raise ValueError(f"bits_stored must be 12 or 16, got {bits_stored}")
    _, _, normal = _orientation_axes(orientation)
    origin = np.zeros(3)
    oxy = np.asarray(origin_xy_mm, dtype=np.float64)
    if oxy.shape not in ((2,), (3,)):
        raise ValueError(f"origin_xy_mm must have 2 or 3 numbers, got shape {oxy.shape}")
    origin[: oxy.size] = oxy

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

    if slice_thickness_mm is None:
        slice_thickness_mm = float(np.median(np.abs(np.diff(z)))) if n > 1 else 1.0
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(n):
        sop_uid = (
            str(sop_instance_uids[k]) if sop_instance_uids is not None
            else _uid("CT", series_uid, k)
        )
        ds = _base_dataset(
            sop_class_uid=CTImageStorage,
            sop_instance_uid=sop_uid,
            modality="CT",
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=1,
            series_description="synthetic CT",
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceThickness = _ds(slice_thickness_mm)
        ds.ImagePositionPatient = _ds_list(origin + z[k] * normal)
        ds.ImageOrientationPatient = _ds_list(orientation)
        ds.SliceLocation = _ds(z[k])
        ds.PixelSpacing = _ds_list(pixel_spacing)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = signed
        ds.RescaleIntercept = _ds(rescale_intercept)
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = stored[k].tobytes()
        name = file_names[k] if file_names is not None else f"CT_{k:04d}.dcm"
        paths.append(_save(ds, folder / name))
    logger.debug("wrote %d CT slices (%d x %d) to %s", n, rows, cols, folder)
    return paths


def write_rtdose(
    path: str | os.PathLike[str],
    dose_gy: np.ndarray,
    *,
    origin_mm: Sequence[float],
    pixel_spacing: tuple[float, float],
    frame_offsets_mm: Sequence[float] | np.ndarray,
    frame_of_reference_uid: str,
    patient_id: str,
    study_uid: str,
    summation_type: str = "PLAN",
    absolute_offsets: bool = False,
    dose_grid_scaling: float | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write a 3D dose grid as a multi-frame RT Dose Storage file.

    Parameters
    ----------
    path
        Destination file (its folder is created if missing).
    dose_gy
        ``(n_frames, rows, cols)`` dose in Gy, non-negative. Frame ``k`` lies at
        ``origin_mm + frame_offsets_mm[k] * normal``.
    origin_mm
        ImagePositionPatient ``(x, y, z)`` of the centre of the first voxel of the first frame, mm.
    pixel_spacing
        ``(row spacing, column spacing)`` in mm.
    frame_offsets_mm
        ``(n_frames,)`` offsets of the frames along the normal relative to the first one, mm;
        the first must be 0.
    frame_of_reference_uid, patient_id, study_uid
        Identifiers written as given.
    summation_type
        DoseSummationType (PLAN, BEAM, FRACTION, ...).
    absolute_offsets
        If True, GridFrameOffsetVector holds the absolute positions along the normal
        (``origin . normal + offsets``; for axial images the z of each frame) instead of the
        relative offsets, the older form some planning systems write.
    dose_grid_scaling
        DoseGridScaling (Gy per stored unit); default chosen so that the maximum dose maps near
        2**31. Stored values are ``round(dose_gy / scaling)`` as uint32.
    orientation
        ImageOrientationPatient.
    series_uid, sop_instance_uid
        Optional UIDs; default derived deterministically from the study, frame of reference and
        file name.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        On inconsistent shapes, negative doses, a first offset that is not 0, or a scaling with
        which the dose does not fit in 32 bits.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    if dose.ndim != 3:
        raise ValueError(f"dose_gy must be (n_frames, rows, cols), got shape {dose.shape}")
    n_frames, rows, cols = dose.shape
    offsets = np.asarray(frame_offsets_mm, dtype=np.float64)
    if offsets.shape != (n_frames,):
        raise ValueError(f"frame_offsets_mm must have {n_frames} values, got shape {offsets.shape}")
    if offsets[0] != 0.0:
        raise ValueError(f"frame_offsets_mm must start at 0 (relative offsets), got {offsets[0]}")
    origin = np.asarray(origin_mm, dtype=np.float64)
    if origin.shape != (3,):
        raise ValueError(f"origin_mm must be (x, y, z), got shape {origin.shape}")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        raise ValueError("dose_gy must be finite and non-negative")
    _, _, normal = _orientation_axes(orientation)

    max_dose = float(dose.max())
    if dose_grid_scaling is None:
        dose_grid_scaling = max_dose / 2.0**31 if max_dose > 0 else 1.0
    scaling_str = _ds(dose_grid_scaling)
    scaling = float(scaling_str)  # the value a reader sees
    if scaling <= 0:
        raise ValueError(f"dose_grid_scaling must be positive, got {dose_grid_scaling}")
    stored = np.round(dose / scaling)
    if stored.max() > 2**32 - 1:
        raise ValueError(
            f"dose up to {max_dose} Gy does not fit in uint32 with DoseGridScaling {scaling}"
        )
    stored = stored.astype("<u4")

    if absolute_offsets:
        gfov = float(origin @ normal) + offsets
        if gfov[0] == 0.0:
            logger.warning("absolute GridFrameOffsetVector starts at 0: readers will take it as "
                           "relative offsets (the same thing here)")
    else:
        gfov = offsets

    path = Path(path)
    series_uid = series_uid or _uid("RTDOSE-series", study_uid, frame_of_reference_uid, path.name)
    sop_uid = sop_instance_uid or _uid("RTDOSE", study_uid, frame_of_reference_uid, path.name)
    ds = _base_dataset(
        sop_class_uid=RTDoseStorage,
        sop_instance_uid=sop_uid,
        modality="RTDOSE",
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        series_number=3,
        series_description="synthetic dose",
    )
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceThickness = _ds(abs(offsets[1] - offsets[0])) if n_frames > 1 else ""
    ds.ImagePositionPatient = _ds_list(origin)
    ds.ImageOrientationPatient = _ds_list(orientation)
    ds.PixelSpacing = _ds_list(pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = _FRAME_INCREMENT_GRID_FRAME_OFFSET
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.GridFrameOffsetVector = _ds_list(gfov)
    ds.DoseGridScaling = scaling_str
    ds.PixelData = stored.tobytes()
    _save(ds, path)
    logger.debug("wrote RTDOSE %s (%d x %d x %d, max %.3f Gy)", path, n_frames, rows, cols,
                 max_dose)
    return path


def _interpreted_type(name: str) -> str:
    upper = name.upper()
    if upper in ("BODY", "EXTERNAL", "SKIN", "OUTLINE"):
        return "EXTERNAL"
    for prefix in ("PTV", "CTV", "GTV"):
        if upper.startswith(prefix):
            return prefix
    return "ORGAN"


def _ct_references(
    ct_files_or_uids: Sequence[str | os.PathLike[str]] | Mapping[str, float],
) -> tuple[list[str], list[tuple[str, np.ndarray, np.ndarray]]]:
    """All CT SOPInstanceUIDs, and ``(uid, position along the normal, normal)`` where known."""
    if isinstance(ct_files_or_uids, Mapping):
        uids = [str(u) for u in ct_files_or_uids]
        planes = [(str(u), np.array(float(zz)), np.array([0.0, 0.0, 1.0]))
                  for u, zz in ct_files_or_uids.items()]
        return uids, planes
    uids: list[str] = []
    planes: list[tuple[str, np.ndarray, np.ndarray]] = []
    for item in ct_files_or_uids:
        if isinstance(item, os.PathLike) or os.path.isfile(str(item)):
            ds = pydicom.dcmread(item, stop_before_pixels=True,
                                 specific_tags=["SOPInstanceUID", "ImagePositionPatient",
                                                "ImageOrientationPatient"])
            uid = str(ds.SOPInstanceUID)
            uids.append(uid)
            if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
                _, _, normal = _orientation_axes([float(v) for v in ds.ImageOrientationPatient])
                ipp = np.array([float(v) for v in ds.ImagePositionPatient])
                planes.append((uid, np.array(float(ipp @ normal)), normal))
        else:
            uids.append(str(item))
    return uids, planes


def write_rtstruct(
    path: str | os.PathLike[str],
    rois: Mapping[str, Sequence[np.ndarray]],
    *,
    ct_files_or_uids: Sequence[str | os.PathLike[str]] | Mapping[str, float],
    frame_of_reference_uid: str,
    patient_id: str,
    study_uid: str,
    series_uid_of_ct: str,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    plane_tolerance_mm: float = 0.01,
) -> Path:
    """Write an RT Structure Set with closed planar contours.

    Parameters
    ----------
    path
        Destination file (its folder is created if missing).
    rois
        ROI name -> list of contours; each contour is an ``(n_points, 3)`` array of patient
        coordinates in mm, one closed planar polygon (the last point is *not* repeated). ROI
        numbers are 1, 2, ... in the mapping's order. An ROI may have no contours.
    ct_files_or_uids
        The CT slices the contours were drawn on, as either paths of CT files (read for their
        SOPInstanceUID and plane, so that each contour references the slice it lies on), a
        mapping ``SOPInstanceUID -> z`` (axial slices), or plain SOPInstanceUID strings (then
        only the series-level ContourImageSequence is written).
    frame_of_reference_uid, patient_id, study_uid, series_uid_of_ct
        Identifiers written as given.
    series_uid, sop_instance_uid
        Optional UIDs of the structure set; default derived deterministically.
    plane_tolerance_mm
        A contour references a CT slice when its mean position along the slice normal is within
        this distance of the slice's.

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    RTROIInterpretedType is PTV / CTV / GTV for names starting so, EXTERNAL for BODY (and
    EXTERNAL, SKIN, OUTLINE), ORGAN otherwise.
    """
    path = Path(path)
    ct_uids, planes = _ct_references(ct_files_or_uids)
    series_uid = series_uid or _uid("RTSTRUCT-series", study_uid, series_uid_of_ct, path.name)
    sop_uid = sop_instance_uid or _uid("RTSTRUCT", study_uid, series_uid_of_ct, path.name)
    ds = _base_dataset(
        sop_class_uid=RTStructureSetStorage,
        sop_instance_uid=sop_uid,
        modality="RTSTRUCT",
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        series_number=2,
        series_description="synthetic structures",
    )
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "DEMO"
    ds.StructureSetName = "DEMO"
    ds.StructureSetDate = _DATE
    ds.StructureSetTime = _TIME

    def image_item(uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = uid
        return item

    series_item = Dataset()
    series_item.SeriesInstanceUID = series_uid_of_ct
    series_item.ContourImageSequence = DicomSequence([image_item(u) for u in ct_uids])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP_CLASS
    study_item.ReferencedSOPInstanceUID = study_uid
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_reference_uid
    for_item.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_item])

    roi_items, contour_items, observation_items = [], [], []
    unmatched = 0
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi_items.append(roi)

        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(_ROI_COLOURS.get(name, (255, 128, 0)))
        contour_seq = []
        for contour in contours:
            pts = np.asarray(contour, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 3:
                raise ValueError(f"ROI {name!r}: a contour must be (n_points >= 3, 3) mm, "
                                 f"got shape {pts.shape}")
            item = Dataset()
            match = None
            for uid, position, normal in planes:
                if abs(float(pts.mean(axis=0) @ normal) - float(position)) <= plane_tolerance_mm:
                    match = uid
                    break
            if match is not None:
                item.ContourImageSequence = DicomSequence([image_item(match)])
            elif planes:
                unmatched += 1
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = pts.shape[0]
            item.ContourData = _ds_list(pts)
            contour_seq.append(item)
        roi_contour.ContourSequence = DicomSequence(contour_seq)
        roi_contour.ReferencedROINumber = number
        contour_items.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = _interpreted_type(name)
        obs.ROIInterpreter = ""
        observation_items.append(obs)

    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)
    if unmatched:
        logger.warning("%s: %d contours lie on no CT slice plane; written without an image "
                       "reference", path, unmatched)
    _save(ds, path)
    logger.debug("wrote RTSTRUCT %s (%d ROIs)", path, len(rois))
    return path


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
    patient_id = f"DEMO{index + 1:03d}"

    # ---- CT geometry
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
    xs = origin_x + spacing * np.arange(cols)  # (cols,) x of the pixel centres, mm
    ys = origin_y + spacing * np.arange(rows)  # (rows,) y of the pixel centres, mm

    # ---- anatomy parameters
    cx = _round(rng.uniform(-30.0, 30.0))
    cy = _round(image_centre_y + rng.uniform(-30.0, 30.0))
    a0 = float(rng.uniform(68.0, 82.0))  # lateral semi-axis of the neck, mm
    b0 = float(rng.uniform(58.0, 70.0))  # antero-posterior semi-axis, mm
    fat = float(rng.uniform(4.0, 8.0))
    zmin, zmax = float(z[0]), float(z[-1])
    extent = zmax - zmin

    def u_of(zz: float) -> float:  # 0 at the lowest slice, 1 at the highest
        return (zz - zmin) / extent

    side = 1 if (index + seed) % 2 == 0 else -1
    u_ptv = float(rng.uniform(0.38, 0.58))
    ptv_radii = (_round(rng.uniform(18.0, 26.0)), _round(rng.uniform(18.0, 26.0)),
                 _round(rng.uniform(18.0, 28.0)))
    ptv_z = _round(zmin + u_ptv * extent)
    a_at_ptv = a0 * (0.92 + 0.16 * u_ptv)
    ptv_centre = (_round(cx + side * 0.38 * a_at_ptv), _round(cy - 0.08 * b0), ptv_z)
    gtv_scale = 0.6
    u_brainstem = float(rng.uniform(0.76, 0.82))
    parotid_cz = zmin + float(rng.uniform(0.68, 0.78)) * extent
    parotid_hz = float(rng.uniform(20.0, 28.0))
    parotid_ab = (float(rng.uniform(10.0, 13.0)), float(rng.uniform(14.0, 18.0)))
    mandible_u = (float(rng.uniform(0.30, 0.38)), float(rng.uniform(0.62, 0.70)))
    mandible_width = float(rng.uniform(7.0, 9.0))
    airway_r = float(rng.uniform(6.0, 9.0))
    airway_phase = float(rng.uniform(0.0, 2.0 * np.pi))
    vert_r = float(rng.uniform(12.0, 15.0))

    hu = np.full((n_slices, rows, cols), _HU_AIR, dtype=np.int16)
    masks = {name: np.zeros((n_slices, rows, cols), dtype=bool) for name in ROI_NAMES}
    contours: dict[str, list[np.ndarray]] = {name: [] for name in ROI_NAMES}

    for k, zk in enumerate(z):
        zk = float(zk)
        u = u_of(zk)
        sl = hu[k]
        # body and fat
        a = a0 * (0.92 + 0.16 * u)
        b = b0 * (0.95 + 0.10 * u)
        body = _ellipse_mask(xs, ys, cx, cy, a, b)
        sl[body] = _HU_FAT
        sl[_ellipse_mask(xs, ys, cx, cy, a - fat, b - fat)] = _HU_SOFT
        masks["BODY"][k] = body
        contours["BODY"].append(_ellipse_polygon(cx, cy, a, b, zk, 64))

        # PTV (with a slightly denser GTV inside)
        s = _ellipsoid_section(zk, ptv_centre[2], ptv_radii[2])
        if s * min(ptv_radii[:2]) > 1.5:
            pa, pb = ptv_radii[0] * s, ptv_radii[1] * s
            m = _ellipse_mask(xs, ys, ptv_centre[0], ptv_centre[1], pa, pb)
            masks["PTV70"][k] = m
            contours["PTV70"].append(_ellipse_polygon(ptv_centre[0], ptv_centre[1], pa, pb, zk, 48))
            gtv = _ellipse_mask(xs, ys, ptv_centre[0], ptv_centre[1], gtv_scale * pa, gtv_scale * pb)
            sl[gtv] = _HU_GTV

        # parotids (ellipsoids, lateral and slightly posterior)
        s = _ellipsoid_section(zk, parotid_cz, parotid_hz)
        if s * min(parotid_ab) > 1.5:
            pa, pb = parotid_ab[0] * s, parotid_ab[1] * s
            for name, sgn in (("LeftParotid", 1.0), ("RightParotid", -1.0)):
                px, py = cx + sgn * 0.62 * a, cy + 0.2 * b
                m = _ellipse_mask(xs, ys, px, py, pa, pb)
                sl[m] = _HU_PAROTID
                masks[name][k] = m
                contours[name].append(_ellipse_polygon(px, py, pa, pb, zk, 48))

        # mandible: anterior half of an elliptical bone ring
        if mandible_u[0] <= u <= mandible_u[1]:
            ma, mb = 0.70 * a, 0.75 * b
            outer = _ellipse_mask(xs, ys, cx, cy, ma, mb)
            inner = _ellipse_mask(xs, ys, cx, cy, ma - mandible_width, mb - mandible_width)
            m = outer & ~inner & (ys <= cy)[:, None]
            sl[m] = _HU_MANDIBLE
            masks["Mandible"][k] = m
            contours["Mandible"].append(_half_ring_polygon(cx, cy, ma, mb, mandible_width, zk, 64))

        # vertebral body, posterior arch, spinal canal with the cord; brainstem at the top
        vy = cy + 0.18 * b
        canal_y = vy + vert_r + 8.0
        if u < u_brainstem:
            sl[_ellipse_mask(xs, ys, cx, vy, vert_r, vert_r)] = _HU_CORTICAL
            sl[_ellipse_mask(xs, ys, cx, vy, vert_r - 2.5, vert_r - 2.5)] = _HU_CANCELLOUS
            sl[_ellipse_mask(xs, ys, cx, canal_y, 12.0, 11.0)] = _HU_ARCH
            sl[_ellipse_mask(xs, ys, cx, canal_y, 7.5, 7.0)] = _HU_SOFT
            m = _ellipse_mask(xs, ys, cx, canal_y, 5.0, 4.5)
            sl[m] = _HU_CORD
            masks["SpinalCord"][k] = m
            contours["SpinalCord"].append(_ellipse_polygon(cx, canal_y, 5.0, 4.5, zk, 32))
        else:
            # skull base: a bone shell inside the fat with brain tissue in it
            sl[_ellipse_mask(xs, ys, cx, cy, a - fat - 1.0, b - fat - 1.0)] = _HU_CORTICAL
            sl[_ellipse_mask(xs, ys, cx, cy, a - fat - 7.0, b - fat - 7.0)] = _HU_BRAIN
            by = canal_y - 4.0
            m = _ellipse_mask(xs, ys, cx, by, 13.0, 10.0)
            sl[m] = _HU_BRAINSTEM
            masks["Brainstem"][k] = m
            contours["Brainstem"].append(_ellipse_polygon(cx, by, 13.0, 10.0, zk, 48))

        # airway: a tube anterior to the spine that wanders a little with z
        if u < u_brainstem:
            ax = cx + 3.0 * math.sin(2.0 * np.pi * zk / 60.0 + airway_phase)
            ay = cy - 0.3 * b + 2.0 * math.cos(2.0 * np.pi * zk / 45.0 + airway_phase)
            sl[_ellipse_mask(xs, ys, ax, ay, airway_r, airway_r * 0.8)] = _HU_AIR

    # mild noise inside the body only (air outside stays exactly -1000)
    noise = np.round(rng.normal(0.0, 3.0, size=hu.shape)).astype(np.int16)
    hu = np.where(masks["BODY"], hu + noise, hu).astype(np.int16)

    # ---- dose grid: coarser, offset origin, covers the body (not the whole CT field of view)
    dsp = _round(rng.uniform(3.0, 4.0), 1)
    dose_spacing = (dsp, dsp)
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
    dx_ = dox + dsp * np.arange(dcols)
    dy_ = doy + dsp * np.arange(drows)
    dz_ = doz + offsets
    DZ, DY, DX = np.meshgrid(dz_, dy_, dx_, indexing="ij")
    rho = np.sqrt(((DX - ptv_centre[0]) / ptv_radii[0]) ** 2
                  + ((DY - ptv_centre[1]) / ptv_radii[1]) ** 2
                  + ((DZ - ptv_centre[2]) / ptv_radii[2]) ** 2)
    r_eff = float(np.prod(ptv_radii) ** (1.0 / 3.0))
    dist = np.maximum(rho - 1.0, 0.0) * r_eff  # approximate distance outside the PTV surface
    sigma = float(rng.uniform(10.0, 15.0))
    falloff = _PRESCRIPTION_GY * np.exp(-(dist**2) / (2.0 * sigma**2))
    bath = float(rng.uniform(5.0, 9.0)) * np.exp(-(((DZ - ptv_centre[2]) / 50.0) ** 2))
    uz = (DZ - zmin) / extent
    body_a = a0 * (0.92 + 0.16 * np.clip(uz, 0.0, 1.0))
    body_b = b0 * (0.95 + 0.10 * np.clip(uz, 0.0, 1.0))
    in_body = ((DX - cx) / body_a) ** 2 + ((DY - cy) / body_b) ** 2 <= 1.0
    dose = np.where(in_body, np.maximum(falloff, bath), 0.0).astype(np.float32)

    return Phantom(
        patient_id=patient_id,
        hu=hu,
        pixel_spacing=(spacing, spacing),
        origin_xy_mm=(origin_x, origin_y),
        slice_positions_mm=z,
        dose_gy=dose,
        dose_origin_mm=(dox, doy, doz),
        dose_pixel_spacing=dose_spacing,
        dose_frame_offsets_mm=offsets,
        contours={name: c for name, c in contours.items()},
        masks=masks,
        ptv_centre_mm=ptv_centre,
        ptv_radii_mm=ptv_radii,
        ptv_side="L" if side > 0 else "R",
        body_centre_xy_mm=(cx, cy),
        prescription_gy=_PRESCRIPTION_GY,
        slice_thickness_mm=thickness,
        study_uid=_uid("study", seed, index),
        ct_series_uid=_uid("ct-series", seed, index),
        frame_of_reference_uid=_uid("frame-of-reference", seed, index),
        index=index,
        seed=seed,
    )


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
    ct = write_ct_series(
        folder,
        phantom.hu,
        pixel_spacing=phantom.pixel_spacing,
        slice_positions_mm=phantom.slice_positions_mm,
        origin_xy_mm=phantom.origin_xy_mm,
        patient_id=phantom.patient_id,
        study_uid=phantom.study_uid,
        series_uid=phantom.ct_series_uid,
        frame_of_reference_uid=phantom.frame_of_reference_uid,
        slice_thickness_mm=phantom.slice_thickness_mm,
    )
    rd = write_rtdose(
        folder / f"RD_{phantom.patient_id}.dcm",
        phantom.dose_gy,
        origin_mm=phantom.dose_origin_mm,
        pixel_spacing=phantom.dose_pixel_spacing,
        frame_offsets_mm=phantom.dose_frame_offsets_mm,
        frame_of_reference_uid=phantom.frame_of_reference_uid,
        patient_id=phantom.patient_id,
        study_uid=phantom.study_uid,
    )
    rs = write_rtstruct(
        folder / f"RS_{phantom.patient_id}.dcm",
        phantom.contours,
        ct_files_or_uids=ct,
        frame_of_reference_uid=phantom.frame_of_reference_uid,
        patient_id=phantom.patient_id,
        study_uid=phantom.study_uid,
        series_uid_of_ct=phantom.ct_series_uid,
    )
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
