"""The archive's plans by geometry: per patient, its geometry descriptor and its dose table.

An :class:`Atlas` holds, for every archive patient with a dose, the descriptor of
:func:`medhash.geometry.patient_descriptor` (CT and contours only) and the
:class:`~medhash.dose.transfer.DoseTable` of its own plan. It answers "which earlier patients are
closest by target-organ geometry" (:meth:`Atlas.neighbours`) and is stored with a dose model
(:mod:`medhash.dose.model`) so that a prediction needs no distance map of any archive patient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .. import geometry
from .transfer import DoseTable, dose_table


@dataclass
class Atlas:
    """Per archive patient with dose: ``patient_ids`` (n,), ``descriptors`` (n, D) float32,
    ``tables`` (n, 2, bins) float64 (:meth:`DoseTable.to_array`), ``levels`` (n, 3) Gy (0: none)."""
    patient_ids: list[str]
    descriptors: np.ndarray
    tables: np.ndarray
    levels: np.ndarray

    def __len__(self) -> int:
        return len(self.patient_ids)

    @classmethod
    def from_entries(cls, entries: list[tuple]) -> "Atlas":
        """An atlas from ``(patient_id, levels (Gy, highest first), descriptor, DoseTable)`` tuples."""
        n, nl = len(entries), geometry.N_LEVELS
        return cls([e[0] for e in entries],
                   np.array([e[2] for e in entries], dtype=np.float32).reshape(n, len(geometry.descriptor_names())),
                   np.array([e[3].to_array() for e in entries], dtype=np.float64).reshape(n, 2, -1),
                   np.array([(list(e[1]) + [0.0] * nl)[:nl] for e in entries], dtype=np.float32).reshape(n, nl))

    def table(self, patient_id: str) -> DoseTable:
        return DoseTable.from_array(self.tables[self.patient_ids.index(patient_id)])

    def subset(self, patient_ids) -> "Atlas":
        """The atlas of these patients only (in this atlas's order)."""
        keep = set(patient_ids)
        j = [i for i, p in enumerate(self.patient_ids) if p in keep]
        return Atlas([self.patient_ids[i] for i in j], self.descriptors[j], self.tables[j], self.levels[j])

    def neighbours(self, descriptor: np.ndarray, k: int, exclude=()) -> list[dict]:
        """The ``k`` patients whose descriptors are nearest (Euclidean) to ``descriptor``, nearest first,
        never one of ``exclude``: ``[{"patient_id", "geometry_distance", "weight"}]``, weight 1 each
        (ties by patient id)."""
        skip = set(exclude)
        d = np.linalg.norm(self.descriptors - np.asarray(descriptor, dtype=np.float32)[None], axis=1)
        order = sorted((float(d[i]), self.patient_ids[i]) for i in range(len(self)) if self.patient_ids[i] not in skip)
        return [{"patient_id": p, "geometry_distance": round(dist, 6), "weight": 1.0} for dist, p in order[:k]]

    def save(self, path) -> None:
        """Write the atlas as one ``.npz`` (no pickle)."""
        with open(path, "wb") as fh:
            np.savez(fh, patient_ids=np.array(self.patient_ids, dtype=str), descriptors=self.descriptors,
                     tables=self.tables, levels=self.levels)

    @classmethod
    def load(cls, path) -> "Atlas":
        with np.load(path, allow_pickle=False) as z:
            return cls([str(p) for p in z["patient_ids"]], z["descriptors"], z["tables"], z["levels"])


def patients_with_dose(archive) -> list[str]:
    """Archive patient ids with at least one slice with dose, sorted."""
    table = archive.table()
    return sorted({str(p) for p in table["patient_id"][table["has_dose"]]})


def atlas_entry(archive, patient_id: str, targets: dict | None = None):
    """(geometry, dose on its slices (n, 128, 128) Gy, descriptor, dose table) of one archive patient."""
    g = geometry.archive_geometry(archive, patient_id, targets)
    rows = geometry.patient_rows(archive, patient_id)
    dose = np.asarray(archive.dose[rows], dtype=np.float32)
    return g, dose, geometry.patient_descriptor(g), dose_table(g, dose)


def build_atlas(archive, patients: list[str] | None = None, *, targets: dict | None = None,
                progress: bool = True) -> Atlas:
    """The :class:`Atlas` of ``patients`` (default: every archive patient with dose), computed afresh."""
    patients = patients if patients is not None else patients_with_dose(archive)
    entries = []
    for pid in tqdm(patients, desc="patient geometry", unit="patient", disable=not progress):
        g, _, desc, table = atlas_entry(archive, pid, targets)
        entries.append((pid, g.levels, desc, table))      # not g: its distance maps are large
    return Atlas.from_entries(entries)
