"""DICOM writers: a CT series, an RTDOSE and an RTSTRUCT from arrays in patient millimetres.

The demo phantoms (:mod:`medhash.demo`), the tests and medhash's own outputs (the RTDOSE of a
predicted dose, :mod:`medhash.dose.prediction`) all write DICOM through these three functions:
:func:`write_ct_series`, :func:`write_rtdose` and :func:`write_rtstruct`.

Who made a file and when is not the writers' choice: every writer takes a :class:`Provenance`
(Manufacturer, StudyDescription, the dates and times, how missing UIDs are made, the default
series descriptions). :func:`medhash_provenance` is the one for real outputs: Manufacturer
"medhash", the local date and time of writing and fresh random UIDs. The deterministic provenance
of the synthetic phantoms is :data:`medhash.demo.DEMO_PROVENANCE`.

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
* UIDs the caller does not give come from ``provenance.uid(*parts)``, with parts that name the
  object (modality, study, series, file name), so a deterministic provenance gives the same UIDs
  for the same call and a random one fresh UIDs every time.
* No patient names: PatientName is always empty.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
    "Provenance",
    "medhash_provenance",
    "write_ct_series",
    "write_rtdose",
    "write_rtstruct",
]

logger = logging.getLogger(__name__)

# Longest value of an LO element (Manufacturer, SeriesDescription, StudyDescription), characters.
_LO_MAX = 64
# Detached Study Management SOP Class, the conventional class of RTReferencedStudySequence items.
_STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
_FRAME_INCREMENT_GRID_FRAME_OFFSET = 0x3004000C

# ROIDisplayColor of common ROI names (orange for any other name).
_ROI_COLOURS: dict[str, tuple[int, int, int]] = {
    "BODY": (0, 255, 0),
    "PTV70": (255, 0, 0),
    "SpinalCord": (255, 255, 0),
    "Brainstem": (0, 255, 255),
    "LeftParotid": (0, 0, 255),
    "RightParotid": (255, 0, 255),
    "Mandible": (255, 255, 255),
}



# --------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """Who wrote a DICOM file and when: the values every writer stamps on its datasets.

    Attributes
    ----------
    manufacturer
        Manufacturer (0008,0070).
    study_description
        StudyDescription (0008,1030); may be empty.
    date, time
        ``YYYYMMDD`` and ``HHMMSS``: InstanceCreation, Study, Series and Content Date/Time and
        the RTSTRUCT's StructureSetDate/Time.
    uid
        ``uid(*parts) -> str``: makes each UID the caller does not give; ``parts`` name the object
        (e.g. ``("RTDOSE", study_uid, frame_of_reference_uid, file_name)``), so a deterministic
        function may derive the UID from them and a random one may ignore them.
    series_label
        Default SeriesDescriptions are ``"<series_label> CT"``, ``"<series_label> dose"`` and
        ``"<series_label> structures"``.
    structure_set_label
        StructureSetLabel and StructureSetName of an RTSTRUCT.
    """

    manufacturer: str
    study_description: str
    date: str
    time: str
    uid: Callable[..., str]
    series_label: str
    structure_set_label: str

    def __post_init__(self) -> None:
        if len(self.date) != 8 or not self.date.isdigit():
            raise ValueError(f"date must be YYYYMMDD, got {self.date!r}")
        if len(self.time) != 6 or not self.time.isdigit():
            raise ValueError(f"time must be HHMMSS, got {self.time!r}")
        for name in ("manufacturer", "study_description"):
            if len(getattr(self, name)) > _LO_MAX:
                raise ValueError(f"{name} must have at most {_LO_MAX} characters (DICOM LO), got "
                                 f"{getattr(self, name)!r}")


def _random_uid(*parts: object) -> str:
    """A fresh random UID (pydicom's root); ``parts`` are ignored."""
    return str(generate_uid())


def medhash_provenance(now: datetime | None = None) -> Provenance:
    """The provenance of medhash's own outputs: Manufacturer "medhash", random UIDs.

    Parameters
    ----------
    now
        When the files are written; default the current local date and time. Call this once per
        output (not at import), so that every file of one output carries the same date and time.

    Returns
    -------
    Provenance
        Manufacturer "medhash", an empty StudyDescription (the files join the study they were
        computed for, whose description is not medhash's to set), ``now``'s date and time, UIDs
        from :func:`pydicom.uid.generate_uid` without entropy sources (fresh on every call),
        default SeriesDescriptions "medhash CT / dose / structures" and StructureSetLabel
        "MEDHASH".
    """
    now = datetime.now() if now is None else now
    return Provenance(manufacturer="medhash", study_description="", date=now.strftime("%Y%m%d"),
                      time=now.strftime("%H%M%S"), uid=_random_uid, series_label="medhash",
                      structure_set_label="MEDHASH")

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _ds(value: float) -> str:
    """Format one number as a DICOM DS string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def _ds_list(values: np.ndarray | Sequence[float]) -> list[str]:
    return [_ds(v) for v in np.asarray(values, dtype=np.float64).ravel()]


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
    provenance: Provenance,
    study_date: str | None = None,
    study_time: str | None = None,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules shared by all writers.

    ``study_date`` / ``study_time``: the study's own StudyDate / StudyTime when the file joins an
    existing study (default: the provenance's, as for a new study)."""
    if len(series_description) > _LO_MAX:
        raise ValueError(f"series_description must have at most {_LO_MAX} characters (DICOM LO), "
                         f"got {len(series_description)}: {series_description!r}")
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = provenance.date
    ds.InstanceCreationTime = provenance.time
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = provenance.date if study_date is None else study_date
    ds.SeriesDate = provenance.date
    ds.ContentDate = provenance.date
    ds.StudyTime = provenance.time if study_time is None else study_time
    ds.SeriesTime = provenance.time
    ds.ContentTime = provenance.time
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = provenance.manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = provenance.study_description
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
    provenance: Provenance,
    series_description: str | None = None,
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
        Optional ``n_slices`` SOPInstanceUIDs; default ``provenance.uid("CT", series_uid, k)``
        for slice ``k``.
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
            else provenance.uid("CT", series_uid, k)
        )
        ds = _base_dataset(
            sop_class_uid=CTImageStorage,
            sop_instance_uid=sop_uid,
            modality="CT",
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=1,
            series_description=series_description or f"{provenance.series_label} CT",
            provenance=provenance,
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
    provenance: Provenance,
    series_description: str | None = None,
    study_date: str | None = None,
    study_time: str | None = None,
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
        Optional UIDs; default ``provenance.uid("RTDOSE-series" or "RTDOSE", study_uid,
        frame_of_reference_uid, file name)``.
    provenance
        Manufacturer, descriptions, dates, times and how missing UIDs are made.
    series_description
        SeriesDescription (at most 64 characters); default ``"<provenance.series_label> dose"``.
    study_date, study_time
        StudyDate / StudyTime of the study the dose joins (``study_uid``'s own); default the
        provenance's date and time.

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
    series_uid = series_uid or provenance.uid("RTDOSE-series", study_uid, frame_of_reference_uid,
                                              path.name)
    sop_uid = sop_instance_uid or provenance.uid("RTDOSE", study_uid, frame_of_reference_uid,
                                                 path.name)
    ds = _base_dataset(
        sop_class_uid=RTDoseStorage,
        sop_instance_uid=sop_uid,
        modality="RTDOSE",
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        series_number=3,
        series_description=series_description or f"{provenance.series_label} dose",
        provenance=provenance,
        study_date=study_date,
        study_time=study_time,
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
    provenance: Provenance,
    series_description: str | None = None,
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
        Optional UIDs of the structure set; default ``provenance.uid("RTSTRUCT-series" or
        "RTSTRUCT", study_uid, series_uid_of_ct, file name)``.
    plane_tolerance_mm
        A contour references a CT slice when its mean position along the slice normal is within
        this distance of the slice's.
    provenance
        Manufacturer, descriptions, StructureSetLabel, dates, times and how missing UIDs are made.
    series_description
        SeriesDescription (at most 64 characters); default
        ``"<provenance.series_label> structures"``.

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
    series_uid = series_uid or provenance.uid("RTSTRUCT-series", study_uid, series_uid_of_ct,
                                              path.name)
    sop_uid = sop_instance_uid or provenance.uid("RTSTRUCT", study_uid, series_uid_of_ct, path.name)
    ds = _base_dataset(
        sop_class_uid=RTStructureSetStorage,
        sop_instance_uid=sop_uid,
        modality="RTSTRUCT",
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        series_number=2,
        series_description=series_description or f"{provenance.series_label} structures",
        provenance=provenance,
    )
    ds.InstanceNumber = 1
    ds.StructureSetLabel = provenance.structure_set_label
    ds.StructureSetName = provenance.structure_set_label
    ds.StructureSetDate = provenance.date
    ds.StructureSetTime = provenance.time

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


