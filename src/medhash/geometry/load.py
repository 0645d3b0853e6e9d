"""Patient geometry read from the archive (CT and structure masks of a patient's slices; never its dose)."""
from __future__ import annotations

import numpy as np

from ..errors import NotFoundError
from .maps import PatientGeometry, from_arrays


def patient_rows(archive, patient_id: str) -> np.ndarray:
    """(n,) archive rows of a patient in z order; NotFoundError when it has none."""
    table = archive.table()
    rows = np.flatnonzero(table["patient_id"] == patient_id)
    if not len(rows):
        raise NotFoundError(f"no patient {patient_id!r} in {archive.path}", param="patient")
    return rows[np.argsort(table["z_mm"][rows], kind="stable")]


def archive_geometry(archive, patient_id: str, targets: dict[str, float] | None = None) -> PatientGeometry:
    """The :class:`~medhash.geometry.PatientGeometry` of an archive patient (all its slices, z order)."""
    rows = patient_rows(archive, patient_id)
    z = archive.table()["z_mm"][rows]
    return from_arrays(np.asarray(archive.ct[rows], dtype=np.float32), z, archive.structure_masks(rows),
                       patient_id=patient_id, targets=targets)
