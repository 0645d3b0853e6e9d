"""A knowledge-based dose model of the archive: a LightGBM voxel regressor on geometry and retrieval.

Every voxel of every training patient is described by the geometry features of
:data:`medhash.geometry.VOXEL_FEATURES` (CT and contours only) plus ``transferred``: the dose its
``k`` nearest patients by geometry give it (:mod:`medhash.dose.transfer`; for a training patient,
its neighbours among the *other* training patients). A gradient-boosted tree ensemble (LightGBM,
absolute-error objective, CPU) learns dose (Gy) from them on :data:`VOXELS_PER_PATIENT` voxels drawn
per patient (seeded) inside the possible-dose mask (else the body).

Stored in ``ARCHIVE/dose-models/<name>/``::

    model.txt       the LightGBM booster, its own text format
    atlas.npz       descriptors and dose tables of the training patients (:class:`~medhash.dose.atlas.Atlas`)
    manifest.json   format, features, settings, training patients, sha256 of both files, timing

Loading checks both sha256; a leave-one-out or k-fold evaluation trains on the other patients only.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .. import geometry
from ..errors import InputError, ModelMismatchError, NotFoundError
from ..store.durable import fsync_file, replace_dir_atomically, write_json_atomic
from ..store.layout import MANIFEST, dose_model_dir, dose_models_dir
from .atlas import Atlas, atlas_entry, patients_with_dose
from .transfer import TABLE_BINS, pool_tables, voxel_bins

FORMAT = "medhash-dose-model/1"
MODEL_FILE = "model.txt"
ATLAS_FILE = "atlas.npz"
FEATURES = tuple(geometry.VOXEL_FEATURES) + ("transferred",)
VOXELS_PER_PATIENT = 20000
PARAMS = {"objective": "l1", "learning_rate": 0.1, "num_leaves": 63, "min_data_in_leaf": 100,
          "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1,
          "deterministic": True, "force_row_wise": True}


@dataclass
class Prepared:
    """One training patient, ready for fitting: its sampled voxels' geometry features ``x`` (m, F-1),
    their bins and level scale for the transferred dose, their dose ``y`` (m,) Gy."""
    x: np.ndarray
    bins: np.ndarray
    scale: float
    y: np.ndarray


@dataclass
class DoseModel:
    """A fitted model: the booster, the atlas of its training patients and its manifest."""
    booster: object
    atlas: Atlas
    manifest: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.get("name", "")

    @property
    def k(self) -> int:
        return int(self.manifest.get("settings", {}).get("k", 10))


def training_voxels(archive, rows: np.ndarray, g, n: int, seed: int) -> np.ndarray:
    """Flat indexes of at most ``n`` voxels of a patient drawn (seeded) inside its possible-dose mask
    (the body where it has none)."""
    pdm, present = archive.possible_dose_masks(rows)
    where = (pdm & g.body) if present.any() else g.body
    idx = np.flatnonzero(where.ravel())
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, min(n, len(idx)), replace=False)) if len(idx) else idx


def prepare(archive, patients: list[str], *, voxels: int = VOXELS_PER_PATIENT, seed: int = 0,
            targets: dict | None = None, progress: bool = True) -> tuple[Atlas, dict[str, Prepared]]:
    """The atlas of ``patients`` and their sampled training voxels (one pass of distance maps each)."""
    entries, prepared = [], {}
    for i, pid in enumerate(tqdm(patients, desc="patient geometry", unit="patient", disable=not progress)):
        g, dose, desc, table = atlas_entry(archive, pid, targets)
        vox = training_voxels(archive, geometry.patient_rows(archive, pid), g, voxels, seed + i)
        key, scale = voxel_bins(g)
        prepared[pid] = Prepared(geometry.voxel_features(g, vox), key.ravel()[vox], scale, dose.ravel()[vox])
        entries.append((pid, g.levels, desc, table))      # not g: its distance maps are large
    atlas = Atlas.from_entries(entries)
    return atlas, prepared


def transferred_from(atlas: Atlas, descriptor: np.ndarray, k: int, exclude=()) -> tuple[np.ndarray, list[dict]]:
    """(pooled dose table (Gy at the reference level), the neighbours used) of the ``k`` patients of
    ``atlas`` nearest to ``descriptor``, never one of ``exclude``."""
    nbrs = atlas.neighbours(descriptor, k, exclude)
    tables = [atlas.table(nb["patient_id"]) for nb in nbrs]
    return pool_tables(tables, [nb["weight"] for nb in nbrs]), nbrs


def train(atlas: Atlas, prepared: dict[str, Prepared], *, k: int = 10, trees: int = 300, seed: int = 0,
          threads: int = 0):
    """A LightGBM booster on the prepared patients of ``atlas`` (each one's transferred dose from its
    ``k`` nearest *other* patients of the atlas)."""
    import lightgbm as lgb  # start-up: LightGBM only to fit or apply a dose model

    xs, ys = [], []
    for i, pid in enumerate(atlas.patient_ids):
        p = prepared[pid]
        pooled, _ = transferred_from(atlas, atlas.descriptors[i], k, exclude=(pid,))
        xs.append(np.column_stack([p.x, pooled[p.bins] * p.scale]).astype(np.float32))
        ys.append(p.y)
    if not xs:
        raise InputError("no patient with a dose to learn from: ingest planned patients first", param="archive")
    params = {**PARAMS, "seed": seed, "num_threads": threads}
    data = lgb.Dataset(np.concatenate(xs), np.concatenate(ys), feature_name=[f.replace(" ", "_") for f in FEATURES],
                       free_raw_data=True)
    return lgb.train(params, data, num_boost_round=trees)


def fit_dose_model(archive, name: str = "default", *, k: int = 10, trees: int = 300, voxels: int = VOXELS_PER_PATIENT,
                   seed: int = 0, patients: list[str] | None = None, targets: dict | None = None,
                   save: bool = True, progress: bool = True) -> DoseModel:
    """Fit the archive's dose model on ``patients`` (default: every patient with dose) and, with
    ``save``, store it as ``dose-models/<name>/`` (module docstring)."""
    t0 = time.perf_counter()
    patients = patients if patients is not None else patients_with_dose(archive)
    if not patients:
        raise InputError(f"{archive.path}: no patient has a dose: nothing to learn a dose model from",
                         param="archive")
    atlas, prepared = prepare(archive, patients, voxels=voxels, seed=seed, targets=targets, progress=progress)
    booster = train(atlas, prepared, k=k, trees=trees, seed=seed)
    manifest = {"format": FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "features": list(FEATURES), "patients": list(atlas.patient_ids),
                "settings": {"k": k, "trees": trees, "voxels_per_patient": voxels, "seed": seed,
                             "params": PARAMS, "targets": targets or {}},
                "fit_seconds": round(time.perf_counter() - t0, 1)}
    model = DoseModel(booster, atlas, manifest)
    if save:
        save_dose_model(archive, model)
    return model


def save_dose_model(archive, model: DoseModel) -> None:
    """Write ``dose-models/<name>/`` whole (a folder replaced atomically), with both files' sha256."""
    from ..features.catalog import sha256_file  # one sha256 helper for every stored model

    with replace_dir_atomically(dose_model_dir(archive, model.name)) as tmp:
        model.booster.save_model(str(tmp / MODEL_FILE))
        model.atlas.save(tmp / ATLAS_FILE)
        for f in (MODEL_FILE, ATLAS_FILE):
            fsync_file(tmp / f)
        model.manifest["sha256"] = {f: sha256_file(tmp / f) for f in (MODEL_FILE, ATLAS_FILE)}
        write_json_atomic(tmp / MANIFEST, model.manifest)


def list_dose_models(archive) -> list[str]:
    """Names of the archive's dose models, sorted."""
    root = dose_models_dir(archive)
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def load_dose_model(archive, name: str | None = None) -> DoseModel:
    """Load dose model ``name`` (default: the only one) after checking its files' sha256."""
    import lightgbm as lgb  # start-up: as train

    from ..features.catalog import sha256_file  # as save_dose_model
    names = list_dose_models(archive)
    if name is None:
        if len(names) != 1:
            raise NotFoundError(
                f"{archive.path} has no dose model: fit one with medhash fit-dose-model" if not names else
                f"{archive.path} has {len(names)} dose models ({', '.join(names)}): name one", param="dose_model")
        name = names[0]
    folder = dose_model_dir(archive, name)
    if name not in names:
        raise NotFoundError(f"no dose model {name!r} in {archive.path} (it has: {', '.join(names) or 'none'})",
                            param="dose_model")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelMismatchError(f"dose model {name!r}: {folder / MANIFEST} cannot be read ({exc}): fit it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("features") != list(FEATURES):
        raise ModelMismatchError(f"dose model {name!r} was made by another version of medhash "
                                 f"({manifest.get('format')}): fit it again")
    for f, digest in manifest.get("sha256", {}).items():
        if not (folder / f).is_file():
            raise ModelMismatchError(f"dose model {name!r}: {f} is missing: fit it again")
        if sha256_file(folder / f) != digest:
            raise ModelMismatchError(f"dose model {name!r}: {f} does not match its recorded sha256: fit it again")
    atlas = Atlas.load(folder / ATLAS_FILE)
    if atlas.tables.shape[1:] != (2, TABLE_BINS):
        raise ModelMismatchError(f"dose model {name!r} holds dose tables of another layout: fit it again")
    booster = lgb.Booster(model_file=str(folder / MODEL_FILE))
    return DoseModel(booster, atlas, manifest)
