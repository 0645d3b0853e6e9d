"""OpenKBP reader: the ``*-pats/pt_*`` sparse-CSV layout → :class:`~medhash.core.records.Volume`.

Format (Babier et al., Med Phys 48:5549, 2021): each patient folder ``pt_N`` holds ``ct.csv``,
``dose.csv`` (Gy), ``possible_dose_mask.csv``, one CSV per contoured structure and
``voxel_dimensions.csv`` (row, column, slice spacing in mm). A CSV has the header ``,data``; each
line gives a flat C-order index into a 128 x 128 x 128 volume and a value (empty for masks); voxels
not listed are 0. Axial slice k is ``vol[:, :, k]``. CT values are HU + 1024, clipped to
[0, 4095]. There are no patient coordinates: the volume is placed with the first voxel at the
origin, rows along +y, columns along +x, and z_mm = k x slice spacing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..core.grid import DOSE_MAX_GY, SPACING_RANGE_MM, PlaneGeometry, place_grid, stack_to_grid
from ..core.records import POSSIBLE_DOSE_MASK, Problem, Volume

log = logging.getLogger(__name__)

SHAPE = (128, 128, 128)
STRUCTURES = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx",
              "Mandible", "PTV56", "PTV63", "PTV70")
"""Structure files of the OpenKBP data set (only those contoured exist for a patient)."""


def is_patient_folder(path: Path) -> bool:
    """True for a folder that holds an OpenKBP patient (``ct.csv`` and ``voxel_dimensions.csv``)."""
    return path.is_dir() and (path / "ct.csv").is_file() and (path / "voxel_dimensions.csv").is_file()


def find_patients(sources: Iterable[str | Path]) -> list[Path]:
    """OpenKBP patient folders in or under the sources (a patient folder, a ``*-pats`` folder, …)."""
    found: list[Path] = []
    for src in sources:
        src = Path(src)
        if is_patient_folder(src):
            found.append(src)
        elif src.is_dir():
            found += sorted((p.parent for p in src.rglob("ct.csv") if is_patient_folder(p.parent)),
                            key=lambda p: (len(p.name), p.name, str(p)))
    return found


def read_sparse(path: Path, *, mask: bool = False) -> np.ndarray:
    """Dense (128, 128, 128) volume from an OpenKBP sparse CSV.

    Returns float32 values (0 where not listed), or bool when ``mask`` (listed indices are True).
    Raises InputError naming the file when it is malformed.
    """
    try:
        with open(path, "rb") as f:
            header = f.readline().strip()
            if header != b",data":
                raise InputError(f"{path}: header is {header[:40]!r}, expected ',data' (OpenKBP sparse CSV)")
            if mask:
                table = np.loadtxt(f, delimiter=",", usecols=0, dtype=np.int64, ndmin=1)
                idx, val = table, None
            else:
                table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
                if table.size and table.shape[1] != 2:
                    raise InputError(f"{path}: expected two columns (index, value), found {table.shape[1]}")
                idx, val = table[:, 0].astype(np.int64) if table.size else np.zeros(0, np.int64), \
                    table[:, 1] if table.size else np.zeros(0)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable OpenKBP sparse CSV ({exc})") from None
    size = int(np.prod(SHAPE))
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise InputError(f"{path}: flat index {int(idx.max() if idx.max() >= size else idx.min())} is outside "
                         f"a {SHAPE} volume")
    if mask:
        out = np.zeros(size, dtype=bool)
        out[idx] = True
    else:
        out = np.zeros(size, dtype=np.float32)
        out[idx] = val
    return out.reshape(SHAPE)


def read_voxel_dimensions(path: Path) -> tuple[float, float, float]:
    """(row, column, slice) spacing in mm from ``voxel_dimensions.csv``."""
    try:
        dims = np.loadtxt(path, dtype=np.float64).ravel()
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read voxel dimensions ({exc})") from None
    lo, hi = SPACING_RANGE_MM
    if dims.shape != (3,) or not np.isfinite(dims).all() or (dims < lo).any() or (dims > hi).any():
        raise InputError(f"{path}: expected three finite numbers within [{lo:g}, {hi:g}] (row, column, slice mm), "
                         f"found {dims.tolist()}")
    return float(dims[0]), float(dims[1]), float(dims[2])


def read_patient(folder: str | Path) -> Volume:
    """Read one OpenKBP patient folder onto the model grid (slices without body not yet removed).

    A patient without ``dose.csv`` is read with ``dose=None`` and a warning.
    """
    folder = Path(folder)
    pid = folder.name
    spacing = read_voxel_dimensions(folder / "voxel_dimensions.csv")
    raw = read_sparse(folder / "ct.csv")
    if not np.isfinite(raw).all():
        raise InputError(f"{folder / 'ct.csv'}: {int((~np.isfinite(raw)).sum())} value(s) are not finite numbers")
    hu = np.clip(raw, 0, 4095) - 1024.0
    # axial slice k = vol[:, :, k]  ->  stack (k, rows, cols)
    stack = np.ascontiguousarray(np.moveaxis(hu, 2, 0), dtype=np.float32)
    n = stack.shape[0]
    geometry = PlaneGeometry(row_dir=np.array([1.0, 0.0, 0.0]), col_dir=np.array([0.0, 1.0, 0.0]),
                             spacing=(spacing[0], spacing[1]), shape=stack.shape[1:])
    z = np.arange(n, dtype=np.float64) * spacing[2]
    ipps = np.column_stack([np.zeros(n), np.zeros(n), z])
    placement = place_grid(stack, geometry, ipps)
    ct = stack_to_grid(stack, geometry.spacing, placement.start, kind="ct")

    warnings: list[Problem] = []
    dose = None
    if (folder / "dose.csv").is_file():
        try:
            d = np.moveaxis(read_sparse(folder / "dose.csv"), 2, 0)
            if not np.isfinite(d).all() or d.min() < 0 or d.max() > DOSE_MAX_GY:
                raise InputError(f"{folder / 'dose.csv'}: values must be finite and within [0, {DOSE_MAX_GY:g}] Gy "
                                 f"(found {np.nanmin(d):.4g} to {np.nanmax(d):.4g}, "
                                 f"{int((~np.isfinite(d)).sum())} not finite); dose not used")
            dose = stack_to_grid(d, geometry.spacing, placement.start, kind="dose")
        except InputError as exc:
            warnings.append(Problem(str(folder / "dose.csv"), str(exc).removeprefix(f"{folder / 'dose.csv'}: ")))
    else:
        warnings.append(Problem(str(folder), "no dose.csv: CT and structures ingested without dose",
                                level="warning"))
    masks: dict[str, np.ndarray] = {}
    names = [s for s in STRUCTURES if (folder / f"{s}.csv").is_file()]
    names += sorted(p.stem for p in folder.glob("*.csv")
                    if p.stem not in STRUCTURES and p.stem not in ("ct", "dose", "possible_dose_mask",
                                                                  "voxel_dimensions"))
    if (folder / "possible_dose_mask.csv").is_file():
        names.append(POSSIBLE_DOSE_MASK)
    for name in names:
        fname = "possible_dose_mask" if name == POSSIBLE_DOSE_MASK else name
        m = np.moveaxis(read_sparse(folder / f"{fname}.csv", mask=True), 2, 0)
        grid_mask = stack_to_grid(m, geometry.spacing, placement.start, kind="mask")
        if grid_mask.any():
            masks[name] = grid_mask
    return Volume(
        patient_id=pid, series_uid=f"openkbp:{pid}", source="openkbp",
        slice_index=np.arange(n, dtype=np.int64), z_mm=z, origins_mm=placement.origins_mm,
        row_dir=geometry.row_dir, col_dir=geometry.col_dir, native_spacing=spacing, ct=ct, dose=dose,
        masks=masks, info={"voxel_dimensions_mm": list(spacing)}, warnings=warnings)


def read_openkbp(sources: Iterable[str | Path], progress: bool = False,
                 known_series: set[str] | None = None) -> Iterator[Volume | Problem]:
    """Read every OpenKBP patient under ``sources``; yields Volumes and Problems (never raises)."""
    from tqdm import tqdm  # start-up: only when reading a cohort

    patients = find_patients(sources)
    for folder in tqdm(patients, desc="OpenKBP patients", unit="patient", disable=not progress, leave=False):
        if known_series and f"openkbp:{folder.name}" in known_series:
            yield Problem(str(folder), f"patient {folder.name} is already in the archive; not read again",
                          level="info")
            continue
        try:
            yield read_patient(folder)
        except InputError as exc:
            yield Problem(str(folder), str(exc))
        except Exception as exc:  # one damaged patient never costs another
            yield Problem(str(folder), f"cannot read this patient ({type(exc).__name__}: {exc}); skipped")
