"""``POST /api/search`` (an upload or an archive slice) and ``POST /api/search/batch`` (many archive
slices): the same JSON as ``medhash search --json``."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..deps import State
from ..models import ArchiveSlice, BatchSearch, SearchParams, UploadForm, validation_message
from ..uploads import label

router = APIRouter()

SEARCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": UploadForm.model_json_schema()},
        "application/json": {"schema": ArchiveSlice.model_json_schema()},
    },
}
EXAMPLE = {"query": {"type": "dicom", "file": "CT_0042.dcm", "slice_index": 0, "z_mm": 12.5, "has_dose": False},
           "index": "ct256", "channel": "ct", "n_bits": 256, "k": 2, "rerank": 0, "same_patient": True,
           "results": [{"rank": 1, "patient_id": "DEMO002", "slice_index": 24, "z_mm": 10.0, "hamming": 18},
                       {"rank": 2, "patient_id": "DEMO004", "slice_index": 31, "z_mm": 15.0, "hamming": 21}],
           "timing_ms": {"prepare": 0.1, "encode": 1.4, "search": 0.1}}


@router.post("/search", summary="Search the archive with an upload or an archive slice",
             openapi_extra={"requestBody": SEARCH_BODY},
             responses={200: {"description": "the same JSON as `medhash search --json`",
                              "content": {"application/json": {"example": EXAMPLE}}},
                        404: {"description": "unknown patient, slice or index"},
                        413: {"description": "request body over the upload limit"},
                        415: {"description": "not DICOM, PNG or NPY (or neither multipart nor JSON)"},
                        422: {"description": "a file that cannot be read or used, or bad settings"}})
async def api_search(request: Request, st: State):
    """Multipart upload (field ``file``: DICOM CT slice, PNG or NPY; optional ``dose``; form fields
    ``k``, ``index``, ``rerank``, ``same_patient``, ``query_image``), or a JSON body naming an archive
    slice (``patient_id``, ``slice_index`` and the same settings). The answer is the dict of
    :func:`medhash.search` (``medhash search --json``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = ArchiveSlice.model_validate(await request.json())
        except (ValueError, RecursionError) as exc:  # bad JSON, a pydantic ValidationError, too deep
            raise HTTPException(422, validation_message(exc)) from None
        res = await run_in_threadpool(st.search_archive, body)
    elif ctype == "multipart/form-data":
        res = await _search_upload(request, st)
    else:
        raise HTTPException(415, f"unsupported request type {ctype or '(none)'}: send multipart/form-data "
                                 "(field 'file') or application/json naming an archive slice")
    return JSONResponse(jsonable_encoder(res))


async def _search_upload(request: Request, st) -> dict:
    """The multipart form of ``POST /api/search``: check the fields, then search in a worker thread."""
    form = await request.form(max_files=2, max_fields=20)
    file, dose = form.get("file"), form.get("dose")
    if not isinstance(file, UploadFile):
        raise HTTPException(422, "multipart field 'file' is required: the query image (DICOM, PNG or NPY)")
    if dose is not None and not isinstance(dose, UploadFile):
        dose = None if dose == "" else dose
        if dose is not None:
            raise HTTPException(422, "multipart field 'dose' must be a file")
    fields = {k: v for k, v in form.items() if k in SearchParams.model_fields and isinstance(v, str) and v != ""}
    try:
        params = SearchParams.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(422, validation_message(exc)) from None
    data = await file.read()
    dose_data = await dose.read() if dose is not None else None
    if not data:
        raise HTTPException(422, f"{label(file.filename, 'file')}: the uploaded file is empty")
    res = await run_in_threadpool(st.search_upload, data, label(file.filename, "upload"), dose_data,
                                  label(dose.filename, "dose") if dose is not None else None, params)
    await form.close()
    return res


@router.post("/search/batch", summary="Search with many archive slices at once",
             responses={200: {"description": "{\"results\": [one `medhash search --json` answer per query]}"},
                        404: {"description": "unknown patient, slice or index"},
                        422: {"description": "bad settings or too many slices"}})
async def api_search_batch(body: BatchSearch, st: State):
    """A JSON body with ``slices`` (a list of ``{patient_id, slice_index}``, up to 1000) and the search
    settings; one batched Hamming search on every core (:func:`medhash.search_many`)."""
    return JSONResponse(jsonable_encoder(await run_in_threadpool(st.search_batch, body)))
