"""The archive's contents: ``/api/archive``, ``/api/indexes``, ``/api/patients`` (one patient, its
similar patients, its planning-time dose and DVHs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from ...errors import InputError, NotFoundError
from ...render import ISODOSE_COLOURS, ISODOSE_GY, PALETTE, SOFT_TISSUE_WINDOW, parse_isodose, resolve_levels
from ..deps import State

WINDOWS = {  # name -> (level, width) HU, offered by the page
    "soft tissue": SOFT_TISSUE_WINDOW, "bone": (500.0, 2000.0), "lung": (-600.0, 1500.0), "brain": (40.0, 80.0)}

router = APIRouter()


@router.get("/archive", summary="Archive overview")
def archive_info(st: State) -> dict:
    """What ``medhash info --json`` prints (without the server's path), plus display settings:
    ``isodose`` (Gy levels and colours), ``palette`` (isodose colours from the highest level down), ``windows`` (name -> level, width HU), ``max_upload_bytes``."""
    with st.archive_lock:
        info = st.archive.info()
    info["archive"] = Path(info["archive"]).name
    info["indexes"] = st.indexes()
    info["isodose"] = [{"gy": g, "colour": c} for g, c in zip(ISODOSE_GY, ISODOSE_COLOURS)]
    info["palette"] = list(PALETTE)
    info["windows"] = {k: {"level": v[0], "width": v[1]} for k, v in WINDOWS.items()}
    info["max_upload_bytes"] = st.max_upload
    return info


@router.get("/isodose", summary="Isodose levels chosen by text, in Gy with their colours")
def isodose_levels(text: Annotated[str, Query(max_length=100, description="'10,20,30' (Gy) or '95,80,50,20%'")],
                   reference_gy: Annotated[float | None, Query(gt=0, le=200, description="dose that percent levels "
                                                               "are relative to, Gy")] = None):
    """``{"unit": "Gy" | "%", "values", "levels": [{"gy", "colour", "label"}], "title"}``: what
    ``/api/slices/...png?isodose=TEXT&reference_gy=...`` draws (``levels`` empty for percent levels
    without a reference: each picture then uses its own maximum). Bad text: 422 naming ``isodose``."""
    try:
        spec = parse_isodose(text)
    except InputError as exc:
        return JSONResponse({"detail": str(exc), "field": "isodose"}, status_code=422)
    iso = resolve_levels(spec, reference_gy, "the query's maximum dose")
    return {"unit": spec.unit, "values": list(spec.values), "title": iso.title,
            "levels": [{"gy": g, "colour": c, "label": lab} for g, c, lab in zip(iso.gy, iso.colours, iso.labels)]}


@router.get("/indexes", summary="The archive's indexes with their manifests")
def indexes(st: State) -> list[dict]:
    """``[{"name", "manifest"}]``; the manifest records channel, models (name, sha256), bits, gamma,
    seed, item count and library versions."""
    from ...retrieval import index_path  # start-up: faiss only once serving
    return [{"name": name, "manifest": json.loads((index_path(st.archive, name) / "manifest.json").read_text())}
            for name in st.indexes()]


@router.get("/patients", summary="The archive's patients")
def patients(st: State) -> list[dict]:
    """``[{"patient_id", "slices", "slice_index_min", "slice_index_max", "slices_with_dose"}]``, sorted by id."""
    t = st.table()
    out = []
    pids = t["patient_id"].astype(str)
    for pid in sorted(set(pids[t["live"]])):
        sel = pids == pid
        idx = t["slice_index"][sel]
        out.append({"patient_id": pid, "slices": int(sel.sum()), "slice_index_min": int(idx.min()),
                    "slice_index_max": int(idx.max()), "slices_with_dose": int(t["has_dose"][sel].sum())})
    return out


@router.get("/patients/{patient_id}", summary="One patient's slices")
def patient(patient_id: str, st: State) -> dict:
    """``{"patient_id", "slices": [{"slice_index", "z_mm", "has_dose"}]}`` in position order."""
    t = st.table()
    sel = np.flatnonzero(t["patient_id"].astype(str) == patient_id)
    if len(sel) == 0:
        raise NotFoundError(f"patient {patient_id!r} is not in the archive")
    sel = sel[np.argsort(t["slice_index"][sel], kind="stable")]
    return {"patient_id": patient_id,
            "slices": [{"slice_index": int(t["slice_index"][r]), "z_mm": round(float(t["z_mm"][r]), 3),
                        "has_dose": bool(t["has_dose"][r])} for r in sel]}


@router.get("/patients/{patient_id}/similar", summary="The most similar other patients (patient-level search)")
def similar_patients(patient_id: str, st: State, index: str | None = None,
                     k: int = Query(5, ge=1, le=100), per_slice: int = Query(20, ge=1, le=1000),
                     rerank: int = Query(0, ge=0, le=100000, description="re-rank each slice's Hamming "
                                                                         "top-N by Euclidean distance (0: off)")
                     ) -> dict:
    """The same JSON as ``medhash search --patient PID --json``: other patients ranked by z-aligned
    slice votes, each with ``patient_score`` and its matched slice pairs."""
    return st.patient_search(patient_id, index, k=k, per_slice=per_slice, rerank=rerank)


Method = Annotated[Literal["model", "neighbours"] | None,
                   Query(description="model: the archive's dose model (default when it has one); neighbours: the "
                                     "similar patients' plans transferred by anatomy (default otherwise)")]
Neighbours = Annotated[int, Query(ge=1, le=100, description="similar patients to use (the dose model uses its own k)")]
NeighboursBy = Annotated[Literal["geometry", "ct", "both"],
                         Query(description="similar by target-organ geometry, by CT (patient search in `index`) "
                                           "or both (ranks fused); the dose model needs geometry")]
IndexName = Annotated[str | None, Query(max_length=200, description="CT index for neighbours_by ct or both "
                                                                     "(default: the archive's only index)")]
PLANNED_ERRORS = {404: {"description": "unknown patient, index or dose model"},
                  422: {"description": "bad parameter, or the patient has no target with a level (e.g. PTV70)"}}


@router.get("/patients/{patient_id}/planned-dose", summary="Planning-time dose and DVHs of an archive patient",
            responses=PLANNED_ERRORS)
def planned_dose(patient_id: str, st: State, method: Method = None, k: Neighbours = 10,
                       neighbours_by: NeighboursBy = "geometry", index: IndexName = None) -> dict:
    """The dose predicted from the patient's CT and contours and the similar patients' plans (never its
    own, :func:`medhash.dose.planning.predict_dose_planned`): ``method``, ``levels_gy``,
    ``neighbours`` (patient_id with geometry_distance, ct_score or fused_score), ``metrics``
    (``predicted`` and ``truth``, the real plan's, OpenKBP DVH metrics in Gy), ``dvh`` (``axis_gy``,
    ``predicted``, ``band`` min/median/max over the neighbours, ``truth``; % of each structure's
    volume, null for NaN), ``seconds``."""
    return st.planned_dose(patient_id, method, k, neighbours_by, index).body


@router.get("/patients/{patient_id}/planned-dose/dvh.png", summary="The planning-time DVHs as a PNG",
            response_class=Response, responses={200: {"content": {"image/png": {}}, "description": "the figure"},
                                                **PLANNED_ERRORS})
def planned_dose_png(patient_id: str, st: State, method: Method = None, k: Neighbours = 10,
                           neighbours_by: NeighboursBy = "geometry", index: IndexName = None):
    """One panel per structure (targets first): predicted (red), the neighbours' band (blue, median
    dashed), the real plan (black dotted). Same parameters as ``planned-dose``."""
    png = st.planned_dose_png(patient_id, method, k, neighbours_by, index)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})
