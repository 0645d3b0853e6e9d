"""Records that cross module boundaries: a volume leaving a reader, a slice leaving the archive."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError, InputError
from .grid import (DOSE_MAX_GY, GRID_SIZE, GRID_SPACING_MM, HU_MAX, HU_MIN, MIN_BODY_FRACTION, POSITION_LIMIT_MM,
                   body_fraction)

POSSIBLE_DOSE_MASK = "possible_dose_mask"
"""Mask name of OpenKBP's possible-dose mask: stored like a structure but not an organ."""


@dataclass
class Volume:
    """One CT series on the model grid, as a reader hands it to the archive.

    All arrays are on the model grid (:mod:`medhash.core.grid`), one entry per slice, in position
    order along the slice normal.

    Attributes
    ----------
    patient_id : archive patient id (DICOM PatientID, or the OpenKBP folder name).
    series_uid : SeriesInstanceUID, or ``openkbp:<patient>`` for OpenKBP.
    source : ``"dicom"`` or ``"openkbp"``.
    slice_index : (n,) int64, 0-based position of each slice in the full volume (position order,
        counting slices later skipped for lack of body).
    z_mm : (n,) float64, position along the slice normal in patient mm.
    origins_mm : (n, 3) float64, patient position of model pixel (0, 0).
    row_dir, col_dir : (3,) float64 unit vectors of the grid's rows and columns.
    native_spacing : (row, column, slice) mm of the source images.
    ct : (n, 128, 128) float32, HU.
    dose : (n, 128, 128) float32, Gy, or None when the series has no dose.
    masks : structure name -> (n, 128, 128) bool.
    info : free metadata recorded in the catalog (study uid, frame of reference, which RTDOSE
        and RTSTRUCT were used, ...). Never a patient name.
    warnings : :class:`Problem` list for the user (missing slices, ignored contours, ...).
    """

    patient_id: str
    series_uid: str
    source: str
    slice_index: np.ndarray
    z_mm: np.ndarray
    origins_mm: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    native_spacing: tuple[float, float, float]
    ct: np.ndarray
    dose: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    warnings: list["Problem"] = field(default_factory=list)
    skipped_no_body: int = 0

    def __post_init__(self) -> None:
        n = len(self.slice_index)
        expect = (n, GRID_SIZE, GRID_SIZE)
        arrays = {"ct": self.ct, "dose": self.dose, **{f"mask {k!r}": v for k, v in self.masks.items()}}
        for name, arr in arrays.items():
            if arr is not None and arr.shape != expect:
                raise GeometryError(
                    f"series {self.series_uid}: {name} has shape {arr.shape}, expected {expect} "
                    "(slices, rows, columns on the model grid)")
        for name, arr in (("z_mm", self.z_mm), ("origins_mm", self.origins_mm)):
            if len(arr) != n:
                raise GeometryError(f"series {self.series_uid}: {name} has {len(arr)} entries for {n} slices")

    def __len__(self) -> int:
        return len(self.slice_index)

    def check_values(self) -> None:
        """Raise :class:`~medhash.errors.InputError` naming the series unless every value is one the
        archive may hold: CT finite and within [HU_MIN, HU_MAX] HU (half a HU of rounding allowed), dose
        finite and within [0, DOSE_MAX_GY] Gy, positions and directions finite (positions within
        POSITION_LIMIT_MM), native spacing finite and positive (:mod:`medhash.core.grid`)."""
        def bad(name: str, arr: np.ndarray, lo: float, hi: float) -> str | None:
            arr = np.asarray(arr, dtype=np.float64) if not isinstance(arr, np.ndarray) else arr
            if arr.size == 0:
                return None
            finite = np.isfinite(arr)
            if not finite.all():
                return f"{name} holds {int((~finite).sum())} value(s) that are not finite (NaN or inf)"
            a, b = float(arr.min()), float(arr.max())
            return None if lo <= a and b <= hi else f"{name} spans {a:.6g} to {b:.6g}, outside [{lo:g}, {hi:g}]"

        checks = [bad("CT (HU)", self.ct, HU_MIN - 0.5, HU_MAX + 0.5),
                  None if self.dose is None else bad("dose (Gy)", self.dose, 0.0, DOSE_MAX_GY),
                  bad("z_mm", self.z_mm, -POSITION_LIMIT_MM, POSITION_LIMIT_MM),
                  bad("origins_mm", self.origins_mm, -2 * POSITION_LIMIT_MM, 2 * POSITION_LIMIT_MM),
                  bad("row_dir", self.row_dir, -1.001, 1.001), bad("col_dir", self.col_dir, -1.001, 1.001),
                  bad("native_spacing", np.asarray(self.native_spacing, dtype=np.float64), 1e-6, 1000.0)]
        found = [c for c in checks if c]
        if found:
            raise InputError(f"series {self.series_uid} of patient {self.patient_id}: " + "; ".join(found)
                             + "; not stored")

    def body_only(self) -> "Volume":
        """The same volume without the slices that have no body (rule in :mod:`medhash.core.grid`)."""
        keep = body_fraction(self.ct) >= MIN_BODY_FRACTION
        if keep.all():
            return self
        return Volume(
            patient_id=self.patient_id, series_uid=self.series_uid, source=self.source,
            slice_index=self.slice_index[keep], z_mm=self.z_mm[keep], origins_mm=self.origins_mm[keep],
            row_dir=self.row_dir, col_dir=self.col_dir, native_spacing=self.native_spacing,
            ct=self.ct[keep], dose=None if self.dose is None else self.dose[keep],
            masks={k: v[keep] for k, v in self.masks.items()}, info=self.info,
            warnings=self.warnings, skipped_no_body=self.skipped_no_body + int((~keep).sum()))


@dataclass(frozen=True)
class Slice:
    """One archived slice on the model grid, named by (patient_id, slice_index).

    Attributes
    ----------
    patient_id, slice_index : the slice's name everywhere (CLI, JSON, web).
    row : its row in the archive arrays (0-based, in ingest order).
    series_uid : the series it came from.
    z_mm : position along the slice normal, patient mm.
    origin_mm : (3,) patient position of model pixel (0, 0); pixel (i, j) lies at
        ``origin_mm + j * spacing_mm * row_dir + i * spacing_mm * col_dir``.
    row_dir, col_dir : (3,) unit vectors.
    ct : (128, 128) float32, HU.
    dose : (128, 128) float32 Gy, or None.
    masks : structure name -> (128, 128) bool (organs and targets; see ``possible_dose_mask``).
    possible_dose_mask : (128, 128) bool, or None (OpenKBP only).
    """

    patient_id: str
    slice_index: int
    row: int
    series_uid: str
    z_mm: float
    origin_mm: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    ct: np.ndarray
    dose: np.ndarray | None
    masks: dict[str, np.ndarray]
    possible_dose_mask: np.ndarray | None
    spacing_mm: float = GRID_SPACING_MM

    @property
    def has_dose(self) -> bool:
        return self.dose is not None

    @property
    def structures(self) -> list[str]:
        """Names of the structures present on this slice (at least one pixel), sorted."""
        return sorted(self.masks)

    def to_dict(self) -> dict:
        """JSON-ready metadata (no arrays)."""
        return {
            "patient_id": self.patient_id, "slice_index": self.slice_index, "z_mm": round(self.z_mm, 3),
            "series_uid": self.series_uid, "has_dose": self.has_dose, "structures": self.structures,
        }


@dataclass(frozen=True)
class Problem:
    """Something wrong with one input, reported to the user; the rest of the run goes on.

    Attributes
    ----------
    path : the file or folder concerned (shown to the user, never stored in the archive).
    message : what is wrong and what was done about it.
    level : ``"error"`` (the item was not ingested) or ``"warning"`` (ingested, but look).
    """

    path: str
    message: str
    level: str = "error"

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"
