"""Dose from similar patients: a query patient's dose estimated from the doses of retrieved patients.

The rule (also in the README):

1. :func:`medhash.retrieval.patient_search` ranks the other patients; the top ``k`` are used, each
   with its z offset (how its anatomy is shifted along z against the query's). The query's own
   patient, or the archive patient a DICOM series is recognised as, is never one of them unless
   ``same_patient``.
2. For every query slice i at z_i and each used patient P, P's slices with dose within
   ``tolerance_mm`` of ``z_i + offset_P`` are the candidates (none: P gives nothing for this slice);
   ``match="feature"`` (default) takes the candidate whose features are nearest (Euclidean) to the
   query slice's, ``match="z"`` the one nearest ``z_i + offset_P``.
3. Body-outline alignment: that slice's dose is shifted in-plane (whole pixels, zero fill) so that
   the centroid of P's body (HU > -500) on that slice falls on the centroid of the query's body.
   Both slices are already on body-centred model grids, so the shift corrects what is left.
4. Of the (at most k) candidate slices of slice i, one per patient, the ``pool`` (default 5) nearest
   in features are kept. The prediction for slice i is the mean of their doses (``weighting="mean"``)
   or their mean weighted by the patients' ``patient_score`` (``"score"``), set to 0 Gy outside the
   query's body. A slice that no patient covers is predicted 0 Gy.

The defaults (k = 10 patients, pool = 5, tolerance 10 mm, feature matching) were chosen on every
third of the 60 OpenKBP patients, leave-one-patient-out (README: measured figures).

The prediction lives on the query's model grid: (n, 128, 128) Gy at the query's slice positions.
:func:`write_prediction` saves it as NPY (+ a JSON sidecar) and, for DICOM queries, as an RTDOSE in
the CT's frame of reference whose frames lie on the CT's slices (the model grid's 3.906 mm pixels
in-plane), which planning systems import and resample like any dose grid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.grid import BODY_HU, GRID_SPACING_MM
from ..errors import InputError
from ..retrieval import IndexCache, open_index, patient_query, patient_search, query_slice_features

WEIGHTINGS = ("mean", "score")
MATCHES = ("feature", "z")
#: SeriesDescription of the RTDOSE of a prediction (DICOM LO: at most 64 characters).
PREDICTED_DOSE_DESCRIPTION = "medhash predicted dose, similar patients, not for clinical use"


@dataclass
class DosePrediction:
    """A predicted dose volume and where it came from.

    Attributes
    ----------
    dose : (n, 128, 128) float32 Gy, on the query's model grid; z_mm, slice_index : (n,).
    patients : the patients used (patient_id, patient_score, z_offset_mm, slices_used).
    coverage : (n,) int, how many patients contributed to each slice.
    query : the patient search's ``query`` record; search : the whole patient search result.
    dvh : planning-time predictions only: the DVHs of :func:`medhash.dose.planning.dvh_summary`.
    """
    dose: np.ndarray
    z_mm: np.ndarray
    slice_index: np.ndarray
    patients: list[dict]
    coverage: np.ndarray
    query: dict
    search: dict = field(repr=False, default_factory=dict)
    volume: object = field(repr=False, default=None)
    dvh: dict | None = field(repr=False, default=None)


def body_centroid(ct: np.ndarray) -> tuple[float, float] | None:
    """(row, col) centroid of the body (HU > -500) of one slice, or None without body."""
    body = np.asarray(ct) > BODY_HU
    if not body.any():
        return None
    r, c = np.nonzero(body)
    return float(r.mean()), float(c.mean())


def shift2d(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``a`` (H, W) moved by whole pixels (rows down, columns right), zeros shifted in."""
    out = np.zeros_like(a)
    h, w = a.shape
    rs, rd = (slice(0, h - dr), slice(dr, h)) if dr >= 0 else (slice(-dr, h), slice(0, h + dr))
    cs, cd = (slice(0, w - dc), slice(dc, w)) if dc >= 0 else (slice(-dc, w), slice(0, w + dc))
    if abs(dr) < h and abs(dc) < w:
        out[rd, cd] = a[rs, cs]
    return out


def aligned_dose(q_ct: np.ndarray, r_ct: np.ndarray, r_dose: np.ndarray) -> np.ndarray:
    """A retrieved slice's dose (Gy) moved so its body centroid falls on the query's."""
    cq, cr = body_centroid(q_ct), body_centroid(r_ct)
    if cq is None or cr is None:
        return np.asarray(r_dose, dtype=np.float32)
    return shift2d(np.asarray(r_dose, dtype=np.float32), int(round(cq[0] - cr[0])), int(round(cq[1] - cr[1])))


def predict_dose(archive, *, patient: str | None = None, series: str | Path | None = None,
                 dose: str | Path | None = None, index: str | None = None, k: int = 10, per_slice: int = 20,
                 rerank: int = 0, tolerance_mm: float = 10.0, weighting: str = "mean",
                 match: str = "feature", pool: int | None = 5, cache: IndexCache | None = None,
                 same_patient: bool = False, pseudonymise=None) -> DosePrediction:
    """Estimate a patient's dose from the ``k`` most similar other patients (rule in the module docstring).

    Parameters as in :func:`medhash.retrieval.patient_search`; ``weighting`` is ``"mean"`` or ``"score"``;
    ``match`` is ``"feature"`` or ``"z"``; ``pool``: per query slice, average only the ``pool`` candidates
    (one per patient) nearest in features instead of all k (``match="feature"`` only); ``cache``: an
    :class:`~medhash.retrieval.IndexCache` to open the index through (default: open it afresh);
    ``same_patient``, ``pseudonymise``: as in :func:`~medhash.retrieval.patient_search` (the query's own
    patient, or the one a DICOM series is recognised as, gives no dose unless ``same_patient``).
    ``query`` of the result gains ``recognised`` and ``excluded_patient``.
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}", param="weighting")
    if match not in MATCHES:
        raise InputError(f"match must be one of {', '.join(MATCHES)}, not {match!r}", param="match")
    res = patient_search(archive, patient=patient, series=series, dose=dose, index=index, k=k, per_slice=per_slice,
                         rerank=rerank, tolerance_mm=tolerance_mm, cache=cache, same_patient=same_patient,
                         pseudonymise=pseudonymise)
    q = patient_query(archive, patient, series, dose)
    q_ct = np.asarray(archive.ct[q.rows], dtype=np.float32) if q.rows is not None else q.ct
    idx = q_feat = None
    if match == "feature":
        idx = open_index(archive, index, cache)
        f, pos = query_slice_features(idx, q)
        q_feat = np.full((len(q.z_mm), f.shape[1]), np.nan, dtype=np.float32)
        q_feat[pos] = f
    cands: list[list[tuple[float, float, int]]] = [[] for _ in range(len(q.z_mm))]  # per slice: (feature d², w, row)
    table = archive.table()
    used = [_candidates(table, r, q.z_mm, q_feat, idx, cands, weighting, tolerance_mm) for r in res["results"]]
    used = [u for u in used if u is not None]
    pred, coverage = _average(archive, q_ct, cands, pool)
    info = {**res["query"], "recognised": res["recognised"], "excluded_patient": res["excluded_patient"]}
    return DosePrediction(pred, q.z_mm, q.slice_index, used, coverage, info, res, q.volume)


def _candidates(table: dict, r: dict, q_z: np.ndarray, q_feat: np.ndarray | None, idx, cands: list[list],
                weighting: str, tolerance_mm: float) -> dict | None:
    """Add one retrieved patient's candidate slice to each query slice it covers (step 2 of the rule);
    returns the patient's record for :attr:`DosePrediction.patients`, or None when it has no dose."""
    rows = np.flatnonzero((table["patient_id"] == r["patient_id"]) & table["has_dose"])
    if not len(rows):
        return None
    zs = table["z_mm"][rows]
    w = 1.0 if weighting == "mean" else float(r["patient_score"])
    p_feat = idx.features_of_rows(rows) if q_feat is not None else None
    n_used = 0
    for i in range(len(q_z)):
        target = q_z[i] + r["z_offset_mm"]
        near = np.flatnonzero(np.abs(zs - target) <= tolerance_mm)
        if not len(near) or w <= 0:
            continue
        d2 = 0.0
        if q_feat is not None and np.isfinite(q_feat[i]).all() and np.isfinite(p_feat[near]).all():
            dd = np.sum((p_feat[near] - q_feat[i]) ** 2, axis=1)
            j, d2 = int(near[np.argmin(dd)]), float(dd.min())
        else:
            j = int(near[np.argmin(np.abs(zs[near] - target))])
        cands[i].append((d2, w, int(rows[j])))
        n_used += 1
    return {"patient_id": r["patient_id"], "patient_score": r["patient_score"], "z_offset_mm": r["z_offset_mm"],
            "slices_used": n_used}


def _average(archive, q_ct: np.ndarray, cands: list[list], pool: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3-4 of the rule: per query slice, the (weighted) mean of the ``pool`` nearest candidates'
    aligned doses, 0 Gy outside the body. Returns (n, 128, 128) float32 Gy and the (n,) coverage."""
    n = len(cands)
    total = np.zeros((n, *q_ct.shape[1:]), dtype=np.float64)
    weight = np.zeros(n, dtype=np.float64)
    coverage = np.zeros(n, dtype=np.int64)
    for i, c in enumerate(cands):
        if pool:
            c = sorted(c, key=lambda t: t[0])[:pool]
        for _, w, row in c:
            total[i] += w * aligned_dose(q_ct[i], archive.ct[row], archive.dose[row])
            weight[i] += w
            coverage[i] += 1
    pred = np.zeros_like(total, dtype=np.float32)
    ok = weight > 0
    pred[ok] = (total[ok] / weight[ok][:, None, None]).astype(np.float32)
    pred[q_ct <= BODY_HU] = 0.0
    return pred, coverage


def write_prediction(pred: DosePrediction, out: str | Path) -> dict[str, Path]:
    """Write ``OUT.npy`` ((n, 128, 128) float32 Gy), ``OUT.json`` (slices, patients used), for a planning-time
    prediction ``OUT-dvh.csv`` / ``.json`` / ``.png`` (:func:`medhash.dose.dvh.write_dvh`) and, for a DICOM
    query, ``OUT.dcm`` (RTDOSE). ``out`` is the path without suffix (a ``.npy`` suffix is dropped)."""
    out = Path(out)
    if out.suffix in (".npy", ".dcm", ".json"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {"npy": out.with_suffix(".npy"), "json": out.with_suffix(".json")}
    np.save(files["npy"], pred.dose.astype(np.float32))
    meta = {"query": pred.query, "grid": {"size": int(pred.dose.shape[1]), "spacing_mm": GRID_SPACING_MM},
            "z_mm": [round(float(z), 3) for z in pred.z_mm], "slice_index": [int(s) for s in pred.slice_index],
            "coverage": pred.coverage.tolist(), "patients": pred.patients, "unit": "Gy",
            "max_gy": float(pred.dose.max()) if pred.dose.size else 0.0}
    files["json"].write_text(json.dumps(meta, indent=2))
    if pred.dvh is not None:
        from .dvh import write_dvh  # start-up: matplotlib only when DVHs are written

        who = pred.query.get("patient_id") or Path(pred.query.get("folder", "query")).name
        files.update({f"dvh {kind}": path for kind, path in write_dvh(
            out, pred.dvh["axis"], pred.dvh["predicted"], pred.dvh["band"], pred.dvh["truth"],
            pred.dvh["metrics"], title=f"{who}: predicted dose ({pred.query.get('method')}) and the band of "
                                       f"{len(pred.patients)} similar patients").items()})
    if pred.volume is not None:
        files["rtdose"] = write_rtdose_for(pred, out.with_suffix(".dcm"))
    return files


def write_rtdose_for(pred: DosePrediction, path: Path) -> Path:
    """RTDOSE of a prediction for a DICOM query: frames on the query's slices, model-grid pixels, the
    CT's frame of reference, orientation, patient id and study.

    Stamped as medhash's own output (:func:`medhash.io.writers.medhash_provenance`): Manufacturer
    "medhash", the date and time of writing, fresh series and instance UIDs, SeriesDescription
    :data:`PREDICTED_DOSE_DESCRIPTION`; PatientName empty. StudyDate / StudyTime are the query study's
    own (read from its folder)."""
    from ..io.writers import medhash_provenance, write_rtdose  # start-up: pydicom only when writing an RTDOSE

    vol = pred.volume
    order = np.argsort(vol.z_mm, kind="stable")
    origins = vol.origins_mm[order]
    normal = np.cross(vol.row_dir, vol.col_dir)
    offsets = (origins - origins[0]) @ normal
    if np.any(np.diff(offsets) <= 0):
        raise InputError("the query's slices are not strictly ordered along the normal; cannot write an RTDOSE")
    return write_rtdose(path, np.clip(pred.dose, 0, None), origin_mm=origins[0],
                        pixel_spacing=(GRID_SPACING_MM, GRID_SPACING_MM), frame_offsets_mm=offsets - offsets[0],
                        frame_of_reference_uid=vol.info.get("frame_of_reference_uid") or "",
                        patient_id=vol.patient_id, study_uid=vol.info.get("study_uid") or "",
                        orientation=tuple(vol.row_dir) + tuple(vol.col_dir),
                        provenance=medhash_provenance(), series_description=PREDICTED_DOSE_DESCRIPTION,
                        **_study_date_time(pred))


def _study_date_time(pred: DosePrediction) -> dict:
    """``{"study_date", "study_time"}`` of the query's study, read from a CT file of its DICOM folder (the
    RTDOSE joins that study: it must not give it another date), or ``{}`` when none can be read."""
    import pydicom  # start-up: pydicom only when a prediction is written for a DICOM query

    from ..io.dicom import iter_files  # start-up: as pydicom
    folder, study = (pred.query or {}).get("folder"), (pred.volume.info or {}).get("study_uid")
    if not folder or not study:
        return {}
    for path in iter_files([folder]):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["StudyInstanceUID", "StudyDate", "StudyTime"])
        except Exception:  # not DICOM, unreadable: another file may do
            continue
        if str(ds.get("StudyInstanceUID", "")) == study:
            return {"study_date": str(ds.get("StudyDate", "") or ""), "study_time": str(ds.get("StudyTime", "") or "")}
    return {}
