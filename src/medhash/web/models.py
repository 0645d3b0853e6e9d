"""The request bodies of the REST API (pydantic models; they are also its OpenAPI schema).

Every field is bounded (documented in docs/search.md, "Limits and errors"): integers by
:data:`MAX_SLICE_INDEX` and the ranges below, names by :data:`MAX_NAME`; a value outside its range is
a 422 naming the field, never a number handed on to SQLite or numpy.
"""
from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError

MAX_SLICE_INDEX = 100_000
"""Largest ``slice_index`` a request may name (0-based; a CT volume has a few hundred slices)."""
MAX_NAME = 200
"""Longest patient id or index name a request may give, characters."""
MAX_K = 1000
"""Most results one search may ask for."""
MAX_RERANK = 100_000
"""Deepest Hamming top-N a search may re-rank."""


class SearchParams(BaseModel):
    """Search settings, shared by the upload and the archive-slice forms of ``POST /api/search``."""

    k: int = Field(10, ge=1, le=MAX_K, description="number of results (1 to 1000)")
    index: str | None = Field(None, max_length=MAX_NAME,
                              description="index name; required when the archive has several indexes "
                                          "(default: the archive's only index)")
    rerank: int = Field(0, ge=0, le=MAX_RERANK, description="re-rank the Hamming top-N by Euclidean distance "
                                                             "(0: off; at most 100000)")
    same_patient: bool | None = Field(None, description="include the query's own patient (default: excluded "
                                                        "for archive slices and for a query recognised as an "
                                                        "archive patient)")
    query_image: bool = Field(False, description="add 'query_image', a PNG data URL of the query drawn like the "
                                                 "results (the page uses it); off: exactly the CLI's JSON")


class ArchiveSlice(SearchParams):
    """``POST /api/search`` with a JSON body: search with an archive slice."""

    patient_id: str = Field(..., min_length=1, max_length=MAX_NAME, description="archive patient id",
                            examples=["DEMO001"])
    slice_index: int = Field(..., ge=0, le=MAX_SLICE_INDEX,
                             description="0-based slice position in the patient's volume (0 to 100000)",
                             examples=[25])


class SliceRef(BaseModel):
    """An archive slice."""

    patient_id: str = Field(..., min_length=1, max_length=MAX_NAME, examples=["DEMO001"])
    slice_index: int = Field(..., ge=0, le=MAX_SLICE_INDEX, examples=[25])


class BatchSearch(BaseModel):
    """``POST /api/search/batch``: many archive slices, one batched search (every core)."""

    slices: list[SliceRef] = Field(..., min_length=1, max_length=1000, description="the queries (1 to 1000)")
    k: int = Field(10, ge=1, le=MAX_K, description="number of results per query (1 to 1000)")
    index: str | None = Field(None, max_length=MAX_NAME,
                              description="index name; required when the archive has several indexes")
    rerank: int = Field(0, ge=0, le=MAX_RERANK, description="re-rank the Hamming top-N by Euclidean distance "
                                                             "(0: off; at most 100000)")
    same_patient: bool | None = Field(None, description="include each query's own patient (default: excluded)")


class UploadForm(SearchParams):
    """``POST /api/search`` as multipart/form-data: search with an uploaded file."""

    file: bytes = Field(..., description="the query: a DICOM CT slice, or a PNG (grey 0..255 = -1000..1000 HU) "
                                         "or NPY (2D, HU) image", json_schema_extra={"format": "binary"})
    dose: bytes | None = Field(None, description="the dose, required by an index with a dose channel (ct+dose): "
                                                 "an RTDOSE of the same frame of reference (DICOM query) or a "
                                                 "PNG/NPY dose image in Gy", json_schema_extra={"format": "binary"})


def validation_message(exc: Exception) -> str:
    """One line per problem of a pydantic ValidationError (or the JSON error)."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())) or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return "bad search settings: " + "; ".join(parts)
    if isinstance(exc, RecursionError):
        return "the body is not usable JSON: nested too deeply"
    return f"the body is not valid JSON ({exc})"
