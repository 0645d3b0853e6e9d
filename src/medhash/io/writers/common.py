"""What every DICOM file medhash writes shares: the :class:`Provenance` stamped on it, the patient,
study, series, equipment and SOP common modules, the image plane and pixel modules, DS formatting and
saving (see :mod:`medhash.io.writers` for the conventions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

# Longest value of an LO element (Manufacturer, SeriesDescription, StudyDescription), characters.
_LO_MAX = 64


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


def ds_str(value: float) -> str:
    """Format one number as a DICOM DS string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def ds_list(values: np.ndarray | Sequence[float]) -> list[str]:
    """:func:`ds_str` of every number of ``values``, flattened."""
    return [ds_str(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def orientation_axes(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def base_dataset(
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


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file at ``path`` (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path



def image_plane(ds: Dataset, *, frame_of_reference_uid: str, position: np.ndarray | Sequence[float],
                orientation: Sequence[float], pixel_spacing: Sequence[float], shape: tuple[int, int],
                bits: tuple[int, int], signed: int) -> None:
    """Set the frame of reference, image plane and grayscale pixel modules of ``ds``.

    ``position``: ImagePositionPatient (mm); ``shape``: (Rows, Columns); ``bits``: (BitsAllocated,
    BitsStored); ``signed``: PixelRepresentation."""
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = ds_list(position)
    ds.ImageOrientationPatient = ds_list(orientation)
    ds.PixelSpacing = ds_list(pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored = bits
    ds.HighBit = bits[1] - 1
    ds.PixelRepresentation = signed


def check_stack(array: np.ndarray, name: str, count: str, positions, positions_name: str) -> np.ndarray:
    """``positions`` as float64; ValueError unless ``array`` is ``(count, rows, cols)`` and ``positions`` has
    one value per frame (``name``, ``count`` and ``positions_name`` name them in the message)."""
    if array.ndim != 3:
        raise ValueError(f"{name} must be ({count}, rows, cols), got shape {array.shape}")
    values = np.asarray(positions, dtype=np.float64)
    if values.shape != (array.shape[0],):
        raise ValueError(f"{positions_name} must have {array.shape[0]} values, got shape {values.shape}")
    return values
