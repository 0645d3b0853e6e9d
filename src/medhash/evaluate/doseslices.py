"""Slice-level dose from the k nearest slices of other patients: pixels against transfer by anatomy.

``queries`` archive slices with dose are drawn (seeded); each is searched in an index (other patients
only) and its dose is predicted from its ``k`` nearest slices two ways:

* **pixels**: the mean of their doses, pixel by pixel (the slice-level figure of section 5);
* **anatomy**: the rule of :mod:`medhash.dose.transfer` on single slices: each neighbour slice's dose is
  binned by its own geometry (distance to its patient's highest-level target, to any target, in-plane
  distance; 3-D distances of its patient), the k tables are pooled and read on the query slice's
  geometry (a bin none of them filled: the mean of its distance bin), scaled by the prescription
  levels; 0 Gy outside the body.

Both are scored by the MAE (Gy) inside the possible-dose mask of the query slice (else its body).
The query's own dose is read only to score.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import geometry
from ..dose.atlas import patients_with_dose
from ..dose.transfer import TABLE_BINS, DoseTable, pool_tables, voxel_bins
from ..retrieval import search_many


def _slice_geometry(archive, progress: bool) -> dict:
    """row -> (patient id, position j in z order); per patient: bins (n, 128, 128) int16, scale, body."""
    where, per = {}, {}
    for pid in tqdm(patients_with_dose(archive), desc="slice geometry", unit="patient", disable=not progress):
        g = geometry.archive_geometry(archive, pid)
        key, scale = voxel_bins(g)
        rows = geometry.patient_rows(archive, pid)
        per[pid] = {"key": key.astype(np.int16), "scale": scale, "body": g.body, "rows": rows}
        where.update({int(r): (pid, j) for j, r in enumerate(rows)})
    return {"where": where, "per": per}


def slice_level_transfer(archive, index: str, *, queries: int = 400, k: int = 10, seed: int = 0,
                         progress: bool = True) -> dict:
    """MAE (Gy) of both rules over ``queries`` drawn slices: ``{"index", "k", "queries", "pixels_mae",
    "anatomy_mae", "zero_mae"}`` (means over the queries)."""
    geo = _slice_geometry(archive, progress)
    table = archive.table()
    rows = np.array(sorted(r for r in geo["where"] if table["has_dose"][r]), dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(rows, min(queries, len(rows)), replace=False))
    names = [f"{table['patient_id'][r]}:{int(table['slice_index'][r])}" for r in picked]
    results = search_many(archive, names, index=index, k=k, same_patient=False)
    row_of = {(str(p), int(si)): int(r) for r, p, si in zip(table["row"], table["patient_id"], table["slice_index"])}
    maes = {"pixels": [], "anatomy": [], "zero": []}
    pdm, present = archive.possible_dose_masks(picked)
    for i, (row, res) in enumerate(zip(picked, results)):
        pid, j = geo["where"][int(row)]
        q = geo["per"][pid]
        mask = pdm[i] if present[i] else q["body"][j]
        if not mask.any():
            continue
        truth = np.asarray(archive.dose[row], dtype=np.float64)
        sums, counts, doses = np.zeros(TABLE_BINS), np.zeros(TABLE_BINS), []
        for r in res["results"]:
            nrow = row_of[(r["patient_id"], int(r["slice_index"]))]
            npid, nj = geo["where"][nrow]
            n = geo["per"][npid]
            d = np.asarray(archive.dose[nrow], dtype=np.float64)
            doses.append(d)
            b = n["body"][nj]
            sums += np.bincount(n["key"][nj][b], d[b] / n["scale"], TABLE_BINS)
            counts += np.bincount(n["key"][nj][b], None, TABLE_BINS)
        anat = pool_tables([DoseTable(sums, counts)])[q["key"][j].astype(np.int64)] * q["scale"]
        anat[~q["body"][j]] = 0.0
        pix = np.mean(doses, axis=0) if doses else np.zeros_like(truth)
        for name, pred in (("pixels", pix), ("anatomy", anat), ("zero", np.zeros_like(truth))):
            maes[name].append(float(np.abs(truth[mask] - pred[mask]).mean()))
    return {"index": index, "k": k, "queries": len(maes["zero"]), "seed": seed,
            **{f"{m}_mae": float(np.mean(v)) if v else None for m, v in maes.items()}}
