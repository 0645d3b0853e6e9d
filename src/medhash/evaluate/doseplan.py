"""Planning-time dose prediction, scored leave-one-patient-out like the OpenKBP challenge.

Every patient with dose is in turn the query, with its CT and contours only. Methods
(:mod:`medhash.dose.planning`):

* ``neighbours by geometry`` / ``by CT`` / ``by both``: the dose transferred by anatomy from the k most
  similar *other* patients (CT: patient search in the CT index given; skipped without one);
* ``geometry mapping, all other patients``: the same transfer pooled over every other patient;
* ``model (k-fold by patient)``: the LightGBM dose model, trained ``folds`` times, each time without the
  fold that holds the query (folds drawn with the seed), its neighbours from that fold's training patients;
* ``predict 0 Gy``.

Per method: the OpenKBP dose score (MAE inside the possible-dose mask, else the body) and DVH score,
per patient; for every method the per-metric DVH errors (e.g. ``D95 PTV70``), the error by band of real
dose (:data:`DOSE_BANDS_GY`: where in the dose distribution the error sits) and the seconds per patient.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import geometry
from ..dose import dose_score, dvh_metrics, dvh_score, write_dvh
from ..dose.atlas import patients_with_dose
from ..dose.model import DoseModel, prepare, train
from ..dose.planning import choose_neighbours, dvh_summary, model_dose
from ..dose.transfer import pool_tables, transfer_dose
from ..retrieval import patient_query
from .doseloo import patient_truth

MODEL = "model (k-fold by patient)"
DOSE_BANDS_GY = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
"""Upper edges of the bands of real dose over which errors are also reported (Gy)."""


def _fold_models(atlas, prepared, folds: int, k: int, seed: int, trees: int, progress: bool) -> dict:
    """patient -> (its fold's DoseModel): ``folds`` models, each trained without one fold."""
    rng = np.random.default_rng(seed)
    ids = list(atlas.patient_ids)
    perm = rng.permutation(len(ids))
    owner = {}
    for f in tqdm(range(folds), desc="dose model folds", unit="fold", disable=not progress):
        test = [ids[i] for i in perm[f::folds]]
        train_atlas = atlas.subset(set(ids) - set(test))
        booster = train(train_atlas, prepared, k=k, trees=trees, seed=seed)
        model = DoseModel(booster, train_atlas, {"name": f"fold {f + 1}", "settings": {"k": k}})
        owner.update({p: model for p in test})
    return owner


def planned_leave_one_out(archive, *, k: int = 10, folds: int = 5, index: str | None = None, seed: int = 0,
                          trees: int = 300, patients: list[str] | None = None, figures: Path | None = None,
                          progress: bool = True) -> dict:
    """Scores of every method of the module docstring; with ``figures`` (a folder), the pictures of
    :func:`example_figures` for the best, median and worst patient of the model.

    Returns
    -------
    dict: ``patients``, ``k``, ``folds``, ``methods``: name -> ``dose_score``, ``dvh_score`` (Gy),
    ``per_patient`` (patient -> dose score), ``dvh_errors`` (metric -> mean |error| Gy), ``seconds_per_patient``;
    ``figures``: name -> PNG file name.
    """
    t0 = time.perf_counter()
    all_ids = patients_with_dose(archive)
    patients = [p for p in (patients or all_ids) if p in all_ids]
    atlas, prepared = prepare(archive, all_ids, seed=seed, progress=progress)
    fit_s = time.perf_counter() - t0
    owner = _fold_models(atlas, prepared, folds, k, seed, trees, progress)
    methods = ["neighbours by geometry", "neighbours by both", "neighbours by CT",
               "geometry mapping, all other patients", MODEL, "predict 0 Gy"]
    if index is None:
        methods = [m for m in methods if "CT" not in m and "both" not in m]
    acc = {m: {"per_patient": {}, "pairs": [], "seconds": 0.0, "err": np.zeros(len(DOSE_BANDS_GY) + 1),
               "n": np.zeros(len(DOSE_BANDS_GY) + 1)} for m in methods}
    for pid in tqdm(patients, desc="leave-one-patient-out", unit="patient", disable=not progress):
        truth = patient_truth(archive, pid)
        if not truth["mask"].any():
            continue
        g = geometry.archive_geometry(archive, pid)
        q = patient_query(archive, pid)
        ref = dvh_metrics(truth["dose"], truth["structures"], truth["voxel_mm3"])
        for m in methods:
            t = time.perf_counter()
            pred = _predict(archive, m, g, q, atlas, owner.get(pid), k, index, pid)
            acc[m]["seconds"] += time.perf_counter() - t
            pred = pred * truth["mask"]
            acc[m]["per_patient"][pid] = dose_score(truth["dose"], pred, truth["mask"])
            band = np.digitize(truth["dose"][truth["mask"]], DOSE_BANDS_GY)
            acc[m]["err"] += np.bincount(band, np.abs(truth["dose"] - pred)[truth["mask"]], len(DOSE_BANDS_GY) + 1)
            acc[m]["n"] += np.bincount(band, None, len(DOSE_BANDS_GY) + 1)
            acc[m]["pairs"].append((ref, dvh_metrics(pred, truth["structures"], truth["voxel_mm3"])))
    out = {"patients": patients, "k": k, "folds": folds, "seed": seed, "index": index,
           "prepare_seconds": round(fit_s, 1), "seconds": round(time.perf_counter() - t0, 1), "methods": {}}
    for m, a in acc.items():
        vals = list(a["per_patient"].values())
        errs: dict[str, list[float]] = {}
        for ref, new in a["pairs"]:
            for name in ref:
                if name in new:
                    errs.setdefault(name, []).append(abs(ref[name] - new[name]))
        out["methods"][m] = {"dose_score": float(np.mean(vals)) if vals else None,
                             "dvh_score": dvh_score(a["pairs"]) if a["pairs"] else None,
                             "per_patient": {p: round(v, 4) for p, v in a["per_patient"].items()},
                             "dvh_errors": {n: round(float(np.mean(v)), 3) for n, v in sorted(errs.items())},
                             "seconds_per_patient": round(a["seconds"] / max(1, len(vals)), 3),
                             "error_by_dose_gy": _by_band(a["err"], a["n"])}
    out["figures"] = {}
    if figures is not None and acc[MODEL]["per_patient"]:
        ranked = sorted(acc[MODEL]["per_patient"], key=acc[MODEL]["per_patient"].get)
        picks = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
        for label, pid in picks.items():
            out["figures"].update(example_figures(archive, pid, atlas, owner[pid], k, Path(figures), label))
    return out


def example_figures(archive, pid: str, atlas, model, k: int, folder: Path, label: str) -> dict[str, str]:
    """For one patient: its DVHs predicted by the model (k-fold) with the band of its k neighbours and its
    real plan's (``dvh-LABEL-PID-dvh.png``), and its real and predicted doses with isodose lines on the
    slices through its highest-level target (``dose-LABEL-PID.png``). Returns name -> file name."""
    from ..render import render_results  # start-up: matplotlib only for the figures

    truth = patient_truth(archive, pid)
    g = geometry.archive_geometry(archive, pid)
    q = patient_query(archive, pid)
    nbrs = choose_neighbours(archive, model.atlas, q, g, k=k, by="geometry", exclude=(pid,))
    pred = model_dose(model, g, pool_tables([model.atlas.table(n["patient_id"]) for n in nbrs]))
    geo = _predict(archive, "neighbours by geometry", g, q, atlas, model, k, None, pid)
    summary = dvh_summary(g, pred, model.atlas, nbrs, truth["dose"])
    dvh = write_dvh(folder / f"dvh-{label}-{pid}", summary["axis"], summary["predicted"], summary["band"],
                    summary["truth"], summary["metrics"],
                    title=f"{pid} ({label} of the model): predicted DVHs, band of {len(nbrs)} neighbours, real plan")
    z = int(round(geometry.target_centroid(g)[0]))
    panels = []
    for i in [i for i in (z - 8, z, z + 8) if 0 <= i < g.shape[0]]:
        s = int(q.slice_index[i])
        panels += [(g.ct[i], truth["dose"][i], f"real plan, slice {s}"), (g.ct[i], pred[i], f"model, slice {s}"),
                   (g.ct[i], geo[i], f"neighbours by geometry, slice {s}")]
    png = folder / f"dose-{label}-{pid}.png"
    score = dose_score(truth["dose"], pred * truth["mask"], truth["mask"])
    render_results(*panels[0], panels[1:], png, ncols=3,
                   suptitle=f"{pid} ({label} of the model, dose score {score:.2f} Gy): real and predicted doses")
    return {f"dvh {label}": dvh["png"].name, f"dose {label}": png.name}


def _by_band(err: np.ndarray, n: np.ndarray) -> dict[str, dict]:
    """Per band of the real dose (``"0-10"`` ... ``">=70"`` Gy): mean |error| (Gy) and share of the voxels."""
    edges = (0.0,) + DOSE_BANDS_GY
    names = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f">={DOSE_BANDS_GY[-1]:g}"]
    total = max(1.0, float(n.sum()))
    return {name: {"mae": round(float(e / c), 3) if c else None, "share": round(float(c / total), 4)}
            for name, e, c in zip(names, err, n)}


def _predict(archive, method: str, g, q, atlas, model, k: int, index, pid: str) -> np.ndarray:
    """One method's (n, 128, 128) Gy prediction for the query ``pid`` (never from its own plan)."""
    if method == "predict 0 Gy":
        return np.zeros(g.shape, dtype=np.float32)
    if method == MODEL:
        nbrs = choose_neighbours(archive, model.atlas, q, g, k=k, by="geometry", exclude=(pid,))
        pooled = pool_tables([model.atlas.table(n["patient_id"]) for n in nbrs])
        return model_dose(model, g, pooled)
    if method.startswith("geometry mapping"):
        return transfer_dose(g, [atlas.table(p) for p in atlas.patient_ids if p != pid])
    by = {"neighbours by geometry": "geometry", "neighbours by CT": "ct", "neighbours by both": "both"}[method]
    nbrs = choose_neighbours(archive, atlas, q, g, k=k, by=by, exclude=(pid,), index=index)
    return transfer_dose(g, [atlas.table(n["patient_id"]) for n in nbrs])
