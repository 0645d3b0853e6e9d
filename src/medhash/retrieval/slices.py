"""Slice search: a query (archive slice, DICOM slice or series, PNG/NPY image) → ranked archive slices.

:func:`search` is the one code path behind ``medhash search``, :func:`medhash.search` and the web
API's ``POST /api/search``; it returns the JSON-ready dict that ``medhash search`` prints as JSON::

    {"query": {"type": "archive", "patient_id": "pt_1", "slice_index": 60, "z_mm": 150.0, ...},
     "index": "ct256", "channel": "ct", "k": 10, "rerank": 0, "same_patient": false,
     "recognised": null, "excluded_patient": "pt_1",
     "results": [{"rank": 1, "patient_id": "pt_7", "slice_index": 58, "z_mm": 145.0,
                  "hamming": 31, "euclidean": 2.41}, ...]}

``euclidean`` appears only when the Hamming short-list was re-ranked (``rerank > 0``).
``recognised`` is the archive patient a DICOM query was recognised as (``{"patient_id", "matched_on"}``,
:func:`~medhash.retrieval.query.recognise`; null for archive and image queries); ``excluded_patient``
the patient whose slices were left out (the query's own, or the recognised one), null when none was.
Each result also carries ``percentile`` (where its Hamming distance lies among the index's random
pairs of different patients) and, for kernel-LSH indexes, ``expected_hamming``; the top-level
``calibration`` holds the reference's quantiles and the verdict (:mod:`.calibration`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import IndexConfigError
from .cache import IndexCache, open_index
from .calibration import calibration_of, expected_hamming
from .index import Index
from .query import Query, needs_geometry, own_patients, parse_query, patients_mask, query_features, recognise


def _check_request(idx: Index, q: Query, k: int, rerank: int, same_patient: bool | None,
                   recognised: dict | None = None):
    """Validate one request; returns (same_patient, excluded mask or None, rerank cut to what exists,
    the excluded patient id or None). The query's own patient (an archive query's, or the archive
    patient a DICOM query was ``recognised`` as) is left out unless ``same_patient``."""
    own = own_patients(q, recognised)
    if same_patient is None:
        same_patient = not own
    left_out = [] if same_patient else own
    excluded = patients_mask(idx, left_out)
    available = len(idx) - (0 if excluded is None else int(excluded.sum()))
    if k < 1:
        raise IndexConfigError(f"k must be at least 1, not {k}", param="k")
    if k > available:
        raise IndexConfigError(f"k = {k} is larger than the {available} slices the index {idx.name!r} can return"
                               + (f" (patient {', '.join(left_out)} excluded)" if left_out else ""), param="k")
    if rerank < 0:
        raise IndexConfigError(f"the re-ranking depth must be 0 or a number >= k, not {rerank}", param="rerank")
    return bool(same_patient), excluded, (min(rerank, available) if rerank else 0), (left_out[0] if left_out else None)


def _result(archive, idx: Index, q: Query, hits, k: int, rerank: int, same_patient: bool, timing: dict,
            identity: dict) -> dict:
    table = archive.table()
    calib = calibration_of(idx)
    pct = calib.rounded_percentile([h.hamming for h in hits])
    expected = expected_hamming(idx, [np.nan if h.euclidean is None else h.euclidean for h in hits])
    results = []
    for rank, h in enumerate(hits, 1):
        r = {"rank": rank, "patient_id": str(table["patient_id"][h.row]), "slice_index": int(table["slice_index"][h.row]),
             "z_mm": round(float(table["z_mm"][h.row]), 3), "hamming": h.hamming,
             "percentile": _round(pct[rank - 1], 2)}
        if expected is not None:
            r["expected_hamming"] = _round(expected[rank - 1], 1)
        if rerank and h.euclidean is not None:
            r["euclidean"] = round(h.euclidean, 6)
        results.append(r)
    return {"query": q.info, "index": idx.name, "channel": idx.channel, "n_bits": idx.n_bits, "k": k,
            "rerank": rerank, "same_patient": same_patient, **identity, "results": results,
            "calibration": calib.summary(min((h.hamming for h in hits), default=None)),
            "timing_ms": {key: round(v * 1e3, 3) for key, v in timing.items()}}


def _round(x: float, digits: int) -> float | None:
    """``round(x, digits)`` as a float, None for NaN (no reference)."""
    return round(float(x), digits) if np.isfinite(x) else None


def search(archive, query: str | Path | Query, *, index: str | None = None, k: int = 10, rerank: int = 0,
           same_patient: bool | None = None, dose: str | Path | None = None,
           slice_index: int | None = None, cache: IndexCache | None = None, pseudonymise=None) -> dict:
    """Search the archive for the slices most similar to ``query``.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive`.
    query : ``"PATIENT:SLICE"``, a DICOM CT file or series folder, a PNG/NPY image, or a :class:`Query`
        (for an index with a geometry block, a DICOM query is read with its folder's RTSTRUCT and an
        image is refused: :func:`~medhash.retrieval.query.parse_query`).
    index : index name (default: the archive's only index).
    k : number of results.
    rerank : re-rank the Hamming top-``rerank`` by exact Euclidean distance (0: no re-ranking).
    same_patient : include slices of the query's own patient: an archive query's, or the archive patient
        a DICOM query is recognised as (:func:`~medhash.retrieval.query.recognise`). Default: left out
        whenever the query has one.
    dose, slice_index : see :func:`~medhash.retrieval.query.parse_query`.
    cache : an :class:`~medhash.retrieval.cache.IndexCache` to open the index through (default: open it afresh).
    pseudonymise : the key the archive was pseudonymised with (file path or bytes), so that a DICOM
        query with the original identifiers is recognised (:func:`~medhash.retrieval.query.recognise`).

    Returns
    -------
    dict : JSON-ready result (see the module docstring); ``timing_ms`` holds encode / search times.
    """
    t0 = time.perf_counter()
    idx = open_index(archive, index, cache)
    q = query if isinstance(query, Query) else parse_query(archive, query, dose=dose, slice_index=slice_index,
                                                           geometry=needs_geometry(idx))
    recognised = recognise(archive, q.identity, pseudonymise)
    same_patient, excluded, rerank, left_out = _check_request(idx, q, k, rerank, same_patient, recognised)
    t1 = time.perf_counter()
    feats = query_features(idx, q)
    t2 = time.perf_counter()
    hits = idx.search(feats, k, rerank=rerank, exclude=None if excluded is None else [excluded])[0]
    t3 = time.perf_counter()
    return _result(archive, idx, q, hits, k, rerank, same_patient,
                   {"prepare": t1 - t0, "encode": t2 - t1, "search": t3 - t2},
                   {"recognised": recognised, "excluded_patient": left_out})


def search_many(archive, queries: list, *, index: str | None = None, k: int = 10, rerank: int = 0,
                same_patient: bool | None = None, cache: IndexCache | None = None,
                pseudonymise=None) -> list[dict]:
    """:func:`search` for many queries at once: one batched Hamming search on every core.

    Parameters
    ----------
    queries : list of what :func:`search` takes (``"PATIENT:SLICE"``, files, :class:`Query`).
    index, k, rerank, same_patient, cache, pseudonymise : as in :func:`search`, the same for every query.

    Returns
    -------
    list of dict, one :func:`search` result per query, in order; ``timing_ms`` holds the whole
    batch's times divided by the number of queries.
    """
    if not len(queries):
        return []
    t0 = time.perf_counter()
    idx = open_index(archive, index, cache)
    qs = [q if isinstance(q, Query) else parse_query(archive, q, geometry=needs_geometry(idx)) for q in queries]
    known = [recognise(archive, q.identity, pseudonymise) for q in qs]
    checked = [_check_request(idx, q, k, rerank, same_patient, r) for q, r in zip(qs, known)]
    depth = max(c[2] for c in checked)
    t1 = time.perf_counter()
    feats = np.concatenate([query_features(idx, q) for q in qs], axis=0)
    t2 = time.perf_counter()
    exclude = [c[1] for c in checked]
    hits = idx.search(feats, k, rerank=depth, exclude=None if all(e is None for e in exclude) else exclude)
    t3 = time.perf_counter()
    n = len(qs)
    timing = {"prepare": (t1 - t0) / n, "encode": (t2 - t1) / n, "search": (t3 - t2) / n}
    return [_result(archive, idx, q, h, k, depth, c[0], timing, {"recognised": r, "excluded_patient": c[3]})
            for q, h, c, r in zip(qs, hits, checked, known)]
