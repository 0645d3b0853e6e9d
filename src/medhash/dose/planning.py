"""Dose for a patient at planning time: from its CT and contours only, by geometry and the archive's plans.

Methods (``predict-dose --method``):

* ``model`` (default when the archive has a dose model): the LightGBM model of
  :mod:`medhash.dose.model`, fed with the query's geometry features and the dose its ``k`` nearest
  patients by geometry transfer to it.
* ``neighbours``: the dose transferred by anatomy (:mod:`medhash.dose.transfer`) from the ``k``
  most similar patients, chosen by geometry descriptor (``by="geometry"``, default), by CT
  (``"ct"``: :func:`medhash.retrieval.patient_search` over a CT index) or by both (``"both"``: ranks
  fused, each patient scored ``1 / (60 + rank)`` in each list, summed).
* ``pixels``: the slice-by-slice rule of :mod:`medhash.dose.prediction` (CT look-alike slices pasted with
  a body-centroid shift); the only method that can use a joint CT + dose index.

The query's own dose is never read by ``model`` or ``neighbours``, and the query's own plan is
never a donor: an archive query's patient, and the archive patient a DICOM series folder is
recognised as (:func:`medhash.retrieval.query.recognise`: same series, study, frame of reference or
PatientID; with the archive's pseudonymisation key when it was built with one), are left out of the
neighbours unless ``same_patient`` (the prediction's info says which patient was recognised and left out).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import geometry
from ..errors import InputError
from ..retrieval import IndexCache, patient_query, patient_search
from .atlas import Atlas, build_atlas
from .dvh import dose_axis, dvh_band, structure_dvhs
from .scores import dvh_metrics
from .model import DoseModel, list_dose_models, load_dose_model
from .prediction import DosePrediction
from .transfer import pool_tables, transfer_dose, voxel_bins

METHODS = ("model", "neighbours", "pixels")
NEIGHBOURS_BY = ("geometry", "ct", "both")
RRF_K = 60


def query_geometry(archive, *, patient: str | None = None, series: str | Path | None = None,
                   targets: dict | None = None, pseudonymise=None):
    """(PatientQuery, PatientGeometry) of an archive patient or a DICOM series folder (its RTSTRUCT
    read with it, and the prescriptions of an RT plan that references it); the query's dose is not read.
    Target levels: ``targets`` first, then the plan's prescriptions, then the levels in the names.
    A series is recognised among the archive's patients (``q.recognised``; ``pseudonymise``: the
    archive's key, see :func:`medhash.retrieval.patient_query`).

    Raises
    ------
    InputError (``param="targets"``) : the query has no target with a level (an archive patient, with the
        names of its structures, or a DICOM series, with how to name the levels).
    """
    q = patient_query(archive, patient, series, pseudonymise=pseudonymise)
    if q.kind == "archive":
        g = geometry.archive_geometry(archive, q.patient_id, targets)
        if not g.levels:
            sets = archive.structure_sets()
            names = ", ".join(sorted(set().union(*(sets[r] for r in q.rows)))) or "none"
            raise InputError(f"patient {q.patient_id!r} has no target with a level in its name (e.g. PTV70), so "
                             f"no dose can be predicted; its structures: {names}", param="targets")
        return q, g
    vol = q.volume
    order = np.argsort(vol.z_mm, kind="stable")
    masks = {name: m[order] for name, m in vol.masks.items()}
    levels = {**vol.info.get("prescriptions", {}), **(targets or {})}     # the plan's, then the user's
    g = geometry.from_arrays(q.ct, q.z_mm, masks, patient_id=None, targets=levels)
    if not g.levels:
        raise InputError(f"{series}: the structure set has no target with a level (e.g. PTV70); name the "
                         "targets and their levels, as PTV_high=70,PTV_low=56", param="targets")
    return q, g


def left_out(q, same_patient: bool = False) -> tuple[str, ...]:
    """The patients that may not be donors for patient query ``q``: its own (archive query) or the one
    it was recognised as (``q.recognised``); none when ``same_patient``."""
    return () if same_patient else tuple(q.own_patients())


def choose_neighbours(archive, atlas: Atlas, q, g, *, k: int, by: str, exclude=(), index: str | None = None,
                      cache: IndexCache | None = None, pseudonymise=None) -> list[dict]:
    """The ``k`` atlas patients most similar to the query, by geometry, CT or both (module docstring):
    ``[{"patient_id", "weight", "geometry_distance"?, "ct_score"?}]``, most similar first; never one of
    ``exclude`` (patient ids). ``pseudonymise``: the archive's key, for the CT patient search."""
    if by not in NEIGHBOURS_BY:
        raise InputError(f"neighbours_by must be one of {', '.join(NEIGHBOURS_BY)}, not {by!r}", param="neighbours_by")
    desc = geometry.patient_descriptor(g)
    by_geo = atlas.neighbours(desc, len(atlas), exclude) if by != "ct" else []
    by_ct = []
    if by != "geometry":
        who = {"patient": q.patient_id} if q.kind == "archive" else {"series": q.info["folder"]}
        res = patient_search(archive, **who, index=index, k=len(atlas) + 1, cache=cache,
                             same_patient=not exclude, pseudonymise=pseudonymise)
        usable = set(atlas.patient_ids) - set(exclude)
        by_ct = [{"patient_id": r["patient_id"], "ct_score": r["patient_score"], "weight": 1.0}
                 for r in res["results"] if r["patient_id"] in usable]
    if by == "geometry":
        return by_geo[:k]
    if by == "ct":
        return by_ct[:k]
    score: dict[str, float] = {}
    for ranked in (by_geo, by_ct):
        for r, item in enumerate(ranked, start=1):
            score[item["patient_id"]] = score.get(item["patient_id"], 0.0) + 1.0 / (RRF_K + r)
    best = sorted(score, key=lambda p: (-score[p], p))[:k]
    return [{"patient_id": p, "fused_score": round(score[p], 6), "weight": 1.0} for p in best]


def rank_patients_by_geometry(archive, *, patient: str | None = None, series: str | Path | None = None,
                              k: int = 10, by: str = "geometry", targets: dict | None = None,
                              dose_model: str | None = None, index: str | None = None,
                              cache: IndexCache | None = None, progress: bool = False, same_patient: bool = False,
                              pseudonymise=None) -> dict:
    """Patient search by target-organ geometry (``by="geometry"``) or geometry and CT fused (``"both"``):
    the ``k`` archive patients with a plan most similar to the query, never the query's own patient
    (an archive query's, or the one a DICOM series is recognised as) unless ``same_patient``.

    The archive's descriptors come from its dose model (``dose_model``, default the only one) or are
    computed afresh. ``pseudonymise``: the archive's key (:func:`query_geometry`). Returns ``{"query", "by", "k",
    "recognised", "excluded_patient", "results": [{"rank", "patient_id", "levels_gy", "geometry_distance" |
    "ct_score" | "fused_score"}], "seconds"}``."""
    t0 = time.perf_counter()
    q, g = query_geometry(archive, patient=patient, series=series, targets=targets, pseudonymise=pseudonymise)
    atlas = _atlas(archive, dose_model, targets, progress)
    exclude = left_out(q, same_patient)
    nbrs = choose_neighbours(archive, atlas, q, g, k=k, by=by, exclude=exclude, index=index, cache=cache,
                             pseudonymise=pseudonymise)
    levels = dict(zip(atlas.patient_ids, atlas.levels.tolist()))
    results = [{"rank": r, **{key: v for key, v in n.items() if key != "weight"},
                "levels_gy": [lv for lv in levels[n["patient_id"]] if lv > 0]} for r, n in enumerate(nbrs, start=1)]
    return {"query": {**q.info, "levels_gy": g.levels, "structures": g.source_names}, "by": by, "k": k,
            "recognised": q.recognised, "excluded_patient": exclude[0] if exclude else None,
            "results": results, "seconds": round(time.perf_counter() - t0, 3)}


def _atlas(archive, dose_model: str | None, targets: dict | None, progress: bool) -> Atlas:
    """The atlas of the named (or only) dose model, else every archive plan's, computed afresh."""
    if dose_model is not None or list_dose_models(archive):
        return load_dose_model(archive, dose_model).atlas
    return build_atlas(archive, targets=targets, progress=progress)


def model_dose(model: DoseModel, g, pooled: np.ndarray) -> np.ndarray:
    """The dose model's prediction on ``g``'s body voxels given the pooled neighbour table:
    (n, 128, 128) float32 Gy, 0 outside the body, never negative."""
    key, scale = voxel_bins(g)
    vox = np.flatnonzero(g.body.ravel())
    x = np.column_stack([geometry.voxel_features(g, vox), pooled[key.ravel()[vox]] * scale]).astype(np.float32)
    out = np.zeros(g.shape, dtype=np.float32)
    if len(vox):
        out.ravel()[vox] = np.clip(model.booster.predict(x, num_threads=0), 0.0, None)
    return out


def predict_dose_planned(archive, *, patient: str | None = None, series: str | Path | None = None,
                         method: str | None = None, dose_model: str | None = None, k: int = 10,
                         neighbours_by: str = "geometry", targets: dict | None = None, index: str | None = None,
                         cache: IndexCache | None = None, progress: bool = False, same_patient: bool = False,
                         pseudonymise=None) -> DosePrediction:
    """A planning-time dose for an archive patient or a DICOM series folder (module docstring).

    ``method`` None picks ``model`` when the archive has a dose model, else ``neighbours``. The
    atlas of archive plans comes from the dose model (``dose_model``: its name; default the only one)
    or, without one, is computed afresh (every archive patient's distance maps: slow, with a progress bar).
    The query's own patient (archive query) or the archive patient a DICOM series is recognised as is
    never a neighbour unless ``same_patient``; ``pseudonymise`` is the archive's key, to recognise a
    series by its original identifiers. The info (``pred.query``) says ``recognised`` and ``excluded_patient``.
    """
    t0 = time.perf_counter()
    if method is None:
        method = "model" if list_dose_models(archive) else "neighbours"
    if method not in ("model", "neighbours"):
        raise InputError(f"method must be one of model, neighbours (pixels: medhash.dose.predict_dose), "
                         f"not {method!r}", param="method")
    q, g = query_geometry(archive, patient=patient, series=series, targets=targets, pseudonymise=pseudonymise)
    model = load_dose_model(archive, dose_model) if method == "model" else None
    atlas = model.atlas if model is not None else _atlas(archive, dose_model, targets, progress)
    exclude = left_out(q, same_patient)
    if method == "model" and neighbours_by != "geometry":
        raise InputError("the dose model was trained with neighbours by geometry: use neighbours_by='geometry'",
                         param="neighbours_by")
    k = model.k if method == "model" else k
    nbrs = choose_neighbours(archive, atlas, q, g, k=k, by=neighbours_by, exclude=exclude, index=index, cache=cache,
                             pseudonymise=pseudonymise)
    tables, weights = [atlas.table(n["patient_id"]) for n in nbrs], [n["weight"] for n in nbrs]
    dose = model_dose(model, g, pool_tables(tables, weights)) if method == "model" else \
        transfer_dose(g, tables, weights)
    info = {**q.info, "method": method, "neighbours_by": neighbours_by, "levels_gy": g.levels,
            "structures": g.source_names, "dose_model": model.name if model is not None else None,
            "dose_model_patients": list(model.atlas.patient_ids) if method == "model" else [],
            "recognised": q.recognised, "excluded_patient": exclude[0] if exclude else None,
            "seconds": round(time.perf_counter() - t0, 3)}
    used = [{**n, "slices_used": int(len(g.z_mm))} for n in nbrs]
    truth = _own_dose(archive, q)
    return DosePrediction(dose, g.z_mm, q.slice_index, used, np.full(len(g.z_mm), len(nbrs)), info,
                          {"neighbours": nbrs}, q.volume, dvh=dvh_summary(g, dose, atlas, nbrs, truth))


def planning_structures(g) -> dict[str, np.ndarray]:
    """The structures a planner reads DVHs of: each target level under its structures' names
    (``"PTV70"``; ``"PTV_a+PTV_b"`` for two at one level) and each organ under its TG-263 name."""
    out = {}
    for level, m in zip(g.levels, g.targets):
        names = g.source_names.get(f"target {level:g}", [])
        out["+".join(names) if names and target_level_of(names) else f"PTV{level:g}"] = m
    out.update(g.organs)
    return out


def target_level_of(names: list[str]) -> bool:
    """True when the first of ``names`` carries its level in its name (so that DVH metrics see a target)."""
    return geometry.target_level(names[0]) is not None


def dvh_summary(g, dose: np.ndarray, atlas: Atlas, nbrs: list[dict], truth: np.ndarray | None = None,
                step_gy: float = 0.5) -> dict:
    """The DVHs of a prediction: ``axis`` (m,) Gy, ``predicted`` name -> (m,) %, ``band`` name -> (3, m) %
    (min / median / max over the neighbours, each one's own dose transferred alone onto the query),
    ``truth`` (the plan's actual dose, archive queries only; never an input of the prediction),
    ``metrics`` (``predicted`` / ``truth`` -> :func:`~medhash.dose.scores.dvh_metrics`)."""
    structures = planning_structures(g)
    own = [transfer_dose(g, [atlas.table(n["patient_id"])]) for n in nbrs]
    top = max([float(dose.max())] + [float(d.max()) for d in own] + ([float(truth.max())] if truth is not None else []))
    axis = dose_axis(max(top, 1.0), step_gy)
    out = {"axis": axis, "predicted": structure_dvhs(dose, structures, axis),
           "band": dvh_band(own, structures, axis) if own else {}, "truth": None,
           "metrics": {"predicted": dvh_metrics(dose, structures, g.voxel_mm3)}}
    if truth is not None:
        out["truth"] = structure_dvhs(truth, structures, axis)
        out["metrics"]["truth"] = dvh_metrics(truth, structures, g.voxel_mm3)
    return out


def _own_dose(archive, q) -> np.ndarray | None:
    """An archive query's own planned dose on its slices (z order), for comparison only; else None."""
    if q.kind != "archive":
        return None
    has = archive.table()["has_dose"][q.rows]
    return np.asarray(archive.dose[q.rows], dtype=np.float32) if has.all() else None
