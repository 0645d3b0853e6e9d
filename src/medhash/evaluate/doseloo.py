"""Dose from similar patients, scored leave-one-patient-out like the OpenKBP challenge.

Every patient with dose is in turn the query; its own slices are never retrieved (patient search
excludes the query's patient). Its dose is predicted by :func:`medhash.dose.predict_dose` and
scored against its real dose with the OpenKBP dose score (MAE in Gy inside the possible-dose mask,
else the body) and DVH score (:mod:`medhash.dose.scores`), beside: predicting 0 Gy; the population mean (every
other patient that matches at least one query slice among 200 neighbours, aligned the same way, equal
weights); Hamming, re-ranked and exact Euclidean
retrieval (Euclidean = every slice of the index re-ranked by Euclidean distance).
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..core.grid import BODY_HU, GRID_SPACING_MM
from ..dose import predict_dose
from ..dose import dose_score, dvh_metrics, dvh_score
from ..retrieval import open_index


def patient_truth(archive, patient_id: str) -> dict:
    """A patient's slices with dose in z order: rows, dose (n, 128, 128), the scoring mask, the
    structures as (n, 128, 128) masks and the voxel volume (mm^3)."""
    table = archive.table()
    rows = np.flatnonzero((table["patient_id"] == patient_id) & table["has_dose"])
    rows = rows[np.argsort(table["z_mm"][rows], kind="stable")]
    z = table["z_mm"][rows]
    pdm, present = archive.possible_dose_masks(rows)
    mask = pdm if present.any() else np.asarray(archive.ct[rows]) > BODY_HU
    structures: dict[str, np.ndarray] = {}
    for j, row in enumerate(rows):
        for name, m in archive[int(row)].masks.items():
            structures.setdefault(name, np.zeros((len(rows),) + m.shape, dtype=bool))[j] = m
    dz = float(np.median(np.diff(z))) if len(z) > 1 else 2.5
    return {"rows": rows, "z_mm": z, "dose": np.asarray(archive.dose[rows], dtype=np.float32), "mask": mask,
            "possible_dose_mask": bool(present.any()), "structures": structures,
            "voxel_mm3": GRID_SPACING_MM * GRID_SPACING_MM * abs(dz)}


def on_truth_slices(pred, truth: dict) -> np.ndarray:
    """The prediction on the truth's slices (archive queries: the same rows, in the same z order)."""
    pos = {round(float(z), 3): i for i, z in enumerate(pred.z_mm)}
    out = np.zeros_like(truth["dose"])
    for j, z in enumerate(truth["z_mm"]):
        i = pos.get(round(float(z), 3))
        if i is not None:
            out[j] = pred.dose[i]
    return out


def own_dose_score(archive, pred, patient_id: str) -> dict | None:
    """OpenKBP dose score of a prediction for an archive patient against its own dose, beside predicting
    0 Gy: ``{"dose_score", "zero", "possible_dose_mask"}`` in Gy, or None when it has no dose to score."""
    truth = patient_truth(archive, patient_id)
    if not len(truth["rows"]) or not truth["mask"].any():
        return None
    p = on_truth_slices(pred, truth) * truth["mask"]
    return {"dose_score": dose_score(truth["dose"], p, truth["mask"]),
            "zero": dose_score(truth["dose"], np.zeros_like(p), truth["mask"]),
            "possible_dose_mask": truth["possible_dose_mask"]}


def leave_one_out(archive, *, index: str | None = None, k: int = 10, pool: int | None = 5, per_slice: int = 20,
                  rerank: int = 200, tolerance_mm: float = 10.0, weighting: str = "mean",
                  patients: list[str] | None = None, progress: bool = True) -> dict:
    """Leave-one-patient-out dose and DVH scores per method (see the module docstring).

    Returns
    -------
    dict: ``patients`` (ids scored), ``k``, ``methods``: name -> ``dose_score`` (mean over patients, Gy),
    ``dvh_score`` (Gy), ``per_patient`` (patient -> dose score); plus the settings.
    """
    idx = open_index(archive, index)
    table = archive.table()
    with_dose = sorted({str(p) for p in table["patient_id"][table["has_dose"]]})
    patients = [p for p in (patients or with_dose) if p in with_dose]
    n_all = len(set(table["patient_id"][table["live"]]))
    methods = {"hamming": {"rerank": 0, "k": k}, f"hamming re-ranked ({rerank})": {"rerank": rerank, "k": k},
               "euclidean (exact)": {"rerank": len(idx), "k": k},
               "population mean (all other patients)": {"rerank": 0, "k": n_all}}
    scores = {m: {"per_patient": {}, "dvh_pairs": []} for m in methods}
    scores["predict 0 Gy"] = {"per_patient": {}, "dvh_pairs": []}
    for pid in tqdm(patients, desc="leave-one-patient-out", unit="patient", disable=not progress):
        truth = patient_truth(archive, pid)
        if not truth["mask"].any():
            continue
        ref = dvh_metrics(truth["dose"], truth["structures"], truth["voxel_mm3"])
        zero = np.zeros_like(truth["dose"])
        scores["predict 0 Gy"]["per_patient"][pid] = dose_score(truth["dose"], zero, truth["mask"])
        scores["predict 0 Gy"]["dvh_pairs"].append((ref, dvh_metrics(zero, truth["structures"], truth["voxel_mm3"])))
        for name, m in methods.items():
            pop = "population" in name
            pred = predict_dose(archive, patient=pid, index=idx.name, k=m["k"],
                                per_slice=max(per_slice, 200) if pop else per_slice,
                                rerank=m["rerank"], tolerance_mm=tolerance_mm,
                                weighting="mean" if pop else weighting, pool=None if pop else pool)
            p = on_truth_slices(pred, truth) * truth["mask"]
            scores[name]["per_patient"][pid] = dose_score(truth["dose"], p, truth["mask"])
            scores[name]["dvh_pairs"].append((ref, dvh_metrics(p, truth["structures"], truth["voxel_mm3"])))
    out = {"patients": patients, "k": k, "pool": pool, "per_slice": per_slice, "tolerance_mm": tolerance_mm, "weighting": weighting,
           "index": idx.name, "methods": {}}
    for name, s in scores.items():
        vals = list(s["per_patient"].values())
        out["methods"][name] = {"dose_score": float(np.mean(vals)) if vals else None,
                                "dvh_score": dvh_score(s["dvh_pairs"]) if s["dvh_pairs"] else None,
                                "per_patient": {p: round(v, 4) for p, v in s["per_patient"].items()}}
    return out
