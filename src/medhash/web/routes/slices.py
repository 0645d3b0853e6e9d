"""One archive slice: ``/api/slices/PATIENT/SLICE.png`` (drawn by :func:`medhash.render.render_png`,
cached by the state) and ``/api/slices/PATIENT/SLICE`` (metadata and neighbours)."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from ...errors import InputError
from ...render import SOFT_TISSUE_WINDOW, parse_isodose
from ..deps import State
from ..models import MAX_SLICE_INDEX

MAX_ISODOSE_TEXT = 100
"""Longest ``isodose`` text accepted, characters (seven levels need far fewer)."""
SliceIndex = Annotated[int, Path(ge=0, le=MAX_SLICE_INDEX, description="0-based slice position (0 to 100000)")]

router = APIRouter()


@router.get("/slices/{patient_id}/{slice_index}.png", summary="One slice as a PNG",
            response_class=Response, responses={200: {"content": {"image/png": {}}, "description": "the picture"}})
def slice_png(patient_id: str, slice_index: SliceIndex, st: State,
              level: Annotated[float, Query(ge=-3000, le=5000, description="window level, HU")] = SOFT_TISSUE_WINDOW[0],
              width: Annotated[float, Query(gt=0, le=10000, description="window width, HU")] = SOFT_TISSUE_WINDOW[1],
              dose: Annotated[bool, Query(description="draw isodose lines (10 to 70 Gy)")] = True,
              size: Annotated[int, Query(ge=32, le=1024, description="picture side, pixels")] = 256,
              crop: Annotated[Literal["body", "full"], Query(description="body: a square around the body; "
                                                                          "full: the 500 mm grid")] = "body",
              isodose: Annotated[str | None, Query(max_length=MAX_ISODOSE_TEXT,
                                                   description="isodose levels: '10,20,30' (Gy) or '95,80,50,20%' "
                                                               "(of reference_gy); default 10 to 70 Gy")] = None,
              reference_gy: Annotated[float | None, Query(gt=0, le=200, description="dose that percent levels are "
                                                          "relative to, Gy (default: this slice's maximum)")] = None):
    """CT in the window (default W400/L40) with the dose as isodose lines; ``size`` x ``size`` pixels.

    Bad ``isodose`` text: 422 ``{"detail", "field": "isodose"}``."""
    spec = None
    if isodose is not None and isodose.strip():
        try:
            spec = parse_isodose(isodose)
        except InputError as exc:
            return JSONResponse({"detail": str(exc), "field": "isodose"}, status_code=422)
    ref = reference_gy if spec is not None and spec.unit == "%" else None
    key = (patient_id, slice_index, level, width, dose, size, crop, spec, ref)
    cached = st.cached_png(key)
    if cached is None:
        s = st.get_slice(patient_id, slice_index)
        cached = st.png(key, s.ct, s.dose, level=level, width=width, show_dose=dose, size=size, crop=crop,
                        isodose=spec, reference_gy=ref)
    return Response(cached, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/slices/{patient_id}/{slice_index}", summary="One slice's metadata and neighbours")
def slice_info(patient_id: str, slice_index: SliceIndex, st: State) -> dict:
    """``{"patient_id", "slice_index", "z_mm", "has_dose", "dose_max_gy", "structures", "series_uid",
    "neighbours": {"previous": [...], "next": [...]}}``; neighbours are up to 3 slice indexes each side."""
    s = st.get_slice(patient_id, slice_index)
    d = s.to_dict()
    d["dose_max_gy"] = round(float(np.max(s.dose)), 3) if s.dose is not None else None
    t = st.table()
    idx = np.sort(t["slice_index"][t["patient_id"].astype(str) == patient_id])
    pos = int(np.searchsorted(idx, slice_index))
    d["neighbours"] = {"previous": [int(i) for i in idx[max(0, pos - 3):pos]],
                       "next": [int(i) for i in idx[pos + 1:pos + 4]]}
    return d
