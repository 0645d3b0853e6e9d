"""RTSTRUCT writer: named closed planar contours as one RT Structure Set file (:func:`write_rtstruct`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, RTStructureSetStorage

from .common import Provenance, base_dataset, ds_list, orientation_axes, save

logger = logging.getLogger(__name__)

# Detached Study Management SOP Class, the conventional class of RTReferencedStudySequence items.
_STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"

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


def _interpreted_type(name: str) -> str:
    """RTROIInterpretedType of an ROI name (see :func:`write_rtstruct`)."""
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
                _, _, normal = orientation_axes([float(v) for v in ds.ImageOrientationPatient])
                ipp = np.array([float(v) for v in ds.ImagePositionPatient])
                planes.append((uid, np.array(float(ipp @ normal)), normal))
        else:
            uids.append(str(item))
    return uids, planes




def write_rtstruct(
    path: str | os.PathLike[str], rois: Mapping[str, Sequence[np.ndarray]], *,
    ct_files_or_uids: Sequence[str | os.PathLike[str]] | Mapping[str, float], frame_of_reference_uid: str,
    patient_id: str, study_uid: str, series_uid_of_ct: str, series_uid: str | None = None,
    sop_instance_uid: str | None = None, plane_tolerance_mm: float = 0.01, provenance: Provenance,
    series_description: str | None = None,
) -> Path:
    """Write an RT Structure Set with closed planar contours.

    Parameters
    ----------
    path
        Destination file (its folder is created if missing).
    rois
        ROI name -> list of contours; each contour is an ``(n_points, 3)`` array of patient coordinates in mm, one
        closed planar polygon (the last point is *not* repeated). ROI numbers are 1, 2, ... in the mapping's order.
        An ROI may have no contours.
    ct_files_or_uids
        The CT slices the contours were drawn on, as either paths of CT files (read for their SOPInstanceUID and
        plane, so that each contour references the slice it lies on), a mapping ``SOPInstanceUID -> z`` (axial
        slices), or plain SOPInstanceUID strings (then only the series-level ContourImageSequence is written).
    frame_of_reference_uid, patient_id, study_uid, series_uid_of_ct
        Identifiers written as given.
    series_uid, sop_instance_uid
        Optional UIDs of the structure set; default ``provenance.uid("RTSTRUCT-series" or "RTSTRUCT", study_uid,
        series_uid_of_ct, file name)``.
    plane_tolerance_mm
        A contour references a CT slice when its mean position along the slice normal is within this distance of the
        slice's.
    provenance
        Manufacturer, descriptions, StructureSetLabel, dates, times and how missing UIDs are made.
    series_description
        SeriesDescription (at most 64 characters); default ``"<provenance.series_label> structures"``.

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
    series_uid = series_uid or provenance.uid("RTSTRUCT-series", study_uid, series_uid_of_ct, path.name)
    sop_uid = sop_instance_uid or provenance.uid("RTSTRUCT", study_uid, series_uid_of_ct, path.name)
    ds = base_dataset(sop_class_uid=RTStructureSetStorage, sop_instance_uid=sop_uid, modality="RTSTRUCT",
                      patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, series_number=2,
                      series_description=series_description or f"{provenance.series_label} structures",
                      provenance=provenance)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = provenance.structure_set_label
    ds.StructureSetName = provenance.structure_set_label
    ds.StructureSetDate = provenance.date
    ds.StructureSetTime = provenance.time
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([
        _frame_of_reference_item(frame_of_reference_uid, study_uid, series_uid_of_ct, ct_uids)])
    unmatched = _roi_sequences(ds, rois, frame_of_reference_uid, planes, plane_tolerance_mm)
    if unmatched:
        logger.warning("%s: %d contours lie on no CT slice plane; written without an image "
                       "reference", path, unmatched)
    save(ds, path)
    logger.debug("wrote RTSTRUCT %s (%d ROIs)", path, len(rois))
    return path


def _roi_sequences(ds: Dataset, rois: Mapping[str, Sequence[np.ndarray]], frame_of_reference_uid: str,
                   planes: list, plane_tolerance_mm: float) -> int:
    """Set the StructureSetROI, ROIContour and RTROIObservations sequences of ``ds`` (ROI numbers 1, 2, ...
    in the order of ``rois``); returns how many contours lie on no known CT plane."""
    roi_items, contour_items, observation_items = [], [], []
    unmatched = 0
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi_items.append(roi)
        roi_contour, missed = _roi_contour(name, number, contours, planes, plane_tolerance_mm)
        contour_items.append(roi_contour)
        unmatched += missed
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = _interpreted_type(name)
        obs.ROIInterpreter = ""
        observation_items.append(obs)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)
    return unmatched


def _image_item(uid: str) -> Dataset:
    """A ContourImageSequence item referencing CT image ``uid``."""
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid
    return item


def _frame_of_reference_item(frame_of_reference_uid: str, study_uid: str, series_uid_of_ct: str,
                             ct_uids: list[str]) -> Dataset:
    """The ReferencedFrameOfReferenceSequence item: frame of reference, study, CT series and its images."""
    series_item = Dataset()
    series_item.SeriesInstanceUID = series_uid_of_ct
    series_item.ContourImageSequence = DicomSequence([_image_item(u) for u in ct_uids])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP_CLASS
    study_item.ReferencedSOPInstanceUID = study_uid
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_reference_uid
    for_item.RTReferencedStudySequence = DicomSequence([study_item])
    return for_item


def _roi_contour(name: str, number: int, contours: Sequence[np.ndarray], planes: list,
                 plane_tolerance_mm: float) -> tuple[Dataset, int]:
    """The ROIContourSequence item of one ROI, and how many of its contours lie on no known CT plane."""
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = list(_ROI_COLOURS.get(name, (255, 128, 0)))
    contour_seq = []
    unmatched = 0
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
            item.ContourImageSequence = DicomSequence([_image_item(match)])
        elif planes:
            unmatched += 1
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = pts.shape[0]
        item.ContourData = ds_list(pts)
        contour_seq.append(item)
    roi_contour.ContourSequence = DicomSequence(contour_seq)
    roi_contour.ReferencedROINumber = number
    return roi_contour, unmatched
