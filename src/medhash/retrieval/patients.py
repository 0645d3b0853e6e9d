"""Patient-level retrieval: which earlier patients look like this one, slice by slice along z.

The rule (also in the README):

1. Every slice i of the query patient (its archive slices in the index, or the slices with body of
   a DICOM series folder) is searched like a slice query: its ``per_slice`` nearest slices by
   Hamming distance (re-ranked if asked) among *other* patients (the query's own patient, or the
   archive patient a DICOM series is recognised as, is left out unless ``same_patient``).
2. Each patient P's matches give a z offset: ``offset_P`` = the median of ``z_match - z_query`` over
   every (query slice, matched slice of P) pair, i.e. how P's anatomy is shifted along z. A match
   counts as *aligned* when ``|z_match - z_query - offset_P| <= tolerance_mm`` (default 10 mm), so a
   patient whose slices match the query's in the wrong order gains little.
3. For each query slice, P scores ``1 - (r - 1) / per_slice`` for its best-ranked aligned match,
   where r is that match's rank among the slice's results (1 for the first), and 0 without one.
   ``patient_score`` = the mean of these over the query's slices, in [0, 1]: 1 means P's aligned
   slice was the nearest for every query slice.
4. Patients are ranked by ``patient_score`` (ties: more matched slices first, then patient id).

Each result lists its matched slice pairs: per query slice, P's best aligned match.

``patient_score`` is relative (the best patient of any archive scores high). Beside it,
``match_percentile`` is the mean percentile (:mod:`.calibration`) of P's matched pairs, an unmatched
query slice counting 100, and ``absolute_score = 1 - match_percentile / 100``; the top-level
``calibration`` says "no similar patient" when most matched slices of the result of best absolute
score are no closer than random pairs (:func:`~medhash.retrieval.calibration.patient_verdict_text`).
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from .cache import IndexCache, open_index
from .calibration import calibration_of, patient_verdict_text
from .query import PatientQuery, patient_query, patients_mask, query_slice_features


def rank_patients(q_z: np.ndarray, hits: list[list], table: dict, per_slice: int,
                  tolerance_mm: float, percentile=None) -> list[dict]:
    """Patients ranked by the rule of the module docstring.

    Parameters
    ----------
    q_z : (m,) z of the searched query slices; hits : per query slice, its results (``Hit`` with
        ``.row`` and ``.hamming``) in rank order; table : the archive's table.
    percentile : the index's :meth:`~medhash.retrieval.calibration.Calibration.percentile`, or None;
        given, each patient also gets ``match_percentile`` (the mean percentile of its matched
        pairs' Hamming distances, 100 for each unmatched query slice) and ``absolute_score``
        (``1 - match_percentile / 100``).
    """
    pids, zs = table["patient_id"], table["z_mm"]
    by_patient: dict[str, list[tuple[int, int, object]]] = defaultdict(list)   # (query slice, rank, hit)
    for i, hs in enumerate(hits):
        for r, h in enumerate(hs, start=1):
            by_patient[str(pids[h.row])].append((i, r, h))
    out = []
    m = len(q_z)
    for pid, matches in by_patient.items():
        offset = float(np.median([zs[h.row] - q_z[i] for i, _, h in matches]))
        best: dict[int, tuple[int, object]] = {}
        for i, r, h in matches:
            if abs(zs[h.row] - q_z[i] - offset) <= tolerance_mm and (i not in best or r < best[i][0]):
                best[i] = (r, h)
        score = sum(1.0 - (r - 1) / per_slice for r, _ in best.values()) / m
        d = {"patient_id": pid, "patient_score": round(score, 6), "z_offset_mm": round(offset, 3),
             "matched_slices": len(best), "_best": best}
        if percentile is not None:
            pct = percentile([h.hamming for _, h in best.values()])
            mp = float((np.nansum(pct) + 100.0 * (m - len(best))) / m) if m else 100.0
            mp = round(mp, 2)
            d.update(match_percentile=mp, absolute_score=round(1.0 - mp / 100.0, 4))
        out.append(d)
    out.sort(key=lambda d: (-d["patient_score"], -d["matched_slices"], d["patient_id"]))
    return out


def patient_search(archive, *, patient: str | None = None, series: str | Path | None = None,
                   dose: str | Path | None = None, index: str | None = None, k: int = 5, per_slice: int = 20,
                   rerank: int = 0, tolerance_mm: float = 10.0, cache: IndexCache | None = None,
                   same_patient: bool = False, pseudonymise=None) -> dict:
    """Rank the other patients of the archive by similarity to a query patient.

    Parameters
    ----------
    patient : archive patient id; or series (a DICOM CT series folder) with an optional ``dose``.
    index : index name (default: the archive's only one); k : patients returned.
    per_slice : slice neighbours per query slice; rerank : re-rank depth of each slice search.
    tolerance_mm : z alignment tolerance (see the module docstring).
    cache : an :class:`~medhash.retrieval.cache.IndexCache` to open the index through (default: open it afresh).
    same_patient : also rank the query's own patient (an archive query's, or the archive patient a DICOM
        series is recognised as: :func:`~medhash.retrieval.query.recognise`); left out by default.
    pseudonymise : the key a pseudonymised archive was built with, to recognise a DICOM series by its
        original identifiers (see :func:`~medhash.retrieval.query.recognise`).

    Returns
    -------
    dict: ``query``, ``index``, ``channel``, ``n_bits``, ``k``, ``per_slice``, ``tolerance_mm``,
    ``recognised`` (the archive patient a DICOM series was recognised as, or null), ``excluded_patient``
    (the patient left out: the query's own or the recognised one; null when none was),
    ``results`` (``rank``, ``patient_id``, ``patient_score``, ``z_offset_mm``, ``matched_slices``,
    ``absolute_score``, ``match_percentile``, ``pairs``: per matched query slice ``query_slice_index``,
    ``query_z_mm``, ``slice_index``, ``z_mm``, ``hamming``, ``percentile``, ``rank_in_slice``), ``calibration``
    (random-pair quantiles and the verdict) and ``timing_ms``.
    """
    t0 = time.perf_counter()
    if k < 1 or per_slice < 1:
        raise InputError(f"k and per_slice must be at least 1 (got {k}, {per_slice})", param="k" if k < 1 else "per_slice")
    if not tolerance_mm >= 0:
        raise InputError(f"tolerance_mm must be >= 0, not {tolerance_mm}", param="tolerance_mm")
    idx = open_index(archive, index, cache)
    q = patient_query(archive, patient, series, dose, pseudonymise)
    t1 = time.perf_counter()
    feats, pos = query_slice_features(idx, q)
    t2 = time.perf_counter()
    left_out = [] if same_patient else q.own_patients()
    mask = patients_mask(idx, left_out)
    excluded = None if mask is None else [mask] * len(feats)
    available = len(idx) - (0 if mask is None else int(mask.sum()))
    if available < 1:
        raise InputError("the index holds no slice of another patient")
    per = min(per_slice, available)
    hits = idx.search(feats, per, rerank=min(max(rerank, per), available) if rerank else 0, exclude=excluded)
    t3 = time.perf_counter()
    table = archive.table()
    calib = calibration_of(idx)
    results = _results(table, q, pos, rank_patients(q.z_mm[pos], hits, table, per, tolerance_mm,
                                                    calib.percentile)[:k], calib.rounded_percentile)
    return {"query": q.info, "index": idx.name, "channel": idx.channel, "n_bits": idx.n_bits, "k": k,
            "per_slice": per, "rerank": rerank, "tolerance_mm": tolerance_mm, "query_slices_searched": int(len(pos)),
            "recognised": q.recognised, "excluded_patient": left_out[0] if left_out else None, "results": results,
            "calibration": patient_verdict(calib, results),
            "timing_ms": {"prepare": round((t1 - t0) * 1e3, 3), "encode": round((t2 - t1) * 1e3, 3),
                          "search": round((t3 - t2) * 1e3, 3)}}


def patient_verdict(calib, results: list[dict]) -> dict:
    """The top-level ``calibration`` of a patient search: the reference's quantiles and the verdict
    (:func:`~medhash.retrieval.calibration.patient_verdict_text`, on the result of best absolute score)."""
    scored = [r for r in results if r.get("absolute_score") is not None]
    best = max(scored, key=lambda r: r["absolute_score"], default=None)
    summary = calib.summary(None, "patient")
    return {**{key: v for key, v in summary.items() if key not in ("verdict", "verdict_text")},
            **patient_verdict_text(best if calib.reference_pairs else None)}


def _results(table: dict, q: PatientQuery, pos: np.ndarray, ranked: list[dict], percentile) -> list[dict]:
    """JSON-ready results of :func:`patient_search`: each ranked patient with its matched slice pairs."""
    q_z = q.z_mm[pos]
    results = []
    for rank, d in enumerate(ranked, start=1):
        pairs = []
        best = d.pop("_best")
        for i in sorted(best):
            r, h = best[i]
            pairs.append({"query_slice_index": int(q.slice_index[pos[i]]), "query_z_mm": round(float(q_z[i]), 3),
                          "slice_index": int(table["slice_index"][h.row]), "z_mm": round(float(table["z_mm"][h.row]), 3),
                          "hamming": int(h.hamming), "percentile": _pct(percentile, h.hamming),
                          "rank_in_slice": int(r)})
        results.append({"rank": rank, **d, "pairs": pairs})
    return results


def _pct(percentile, hamming: int) -> float | None:
    p = float(percentile(hamming))
    return p if np.isfinite(p) else None
