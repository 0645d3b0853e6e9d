"""The request bodies of the REST API (pydantic models; they are also its OpenAPI schema)."""
from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError


class SearchParams(BaseModel):
    """Search settings, shared by the upload and the archive-slice forms of ``POST /api/search``."""

    k: int = Field(10, ge=1, le=1000, description="number of results")
    index: str | None = Field(None, description="index name (default: the archive's only index)")
    rerank: int = Field(0, ge=0, le=100000, description="re-rank the Hamming top-N by Euclidean distance (0: off)")
    same_patient: bool | None = Field(None, description="include the query's own patient (default: excluded "
                                                        "for archive slices)")
    query_image: bool = Field(False, description="add 'query_image', a PNG data URL of the query drawn like the "
                                                 "results (the page uses it); off: exactly the CLI's JSON")


class ArchiveSlice(SearchParams):
    """``POST /api/search`` with a JSON body: search with an archive slice."""

    patient_id: str = Field(..., description="archive patient id", examples=["DEMO001"])
    slice_index: int = Field(..., description="0-based slice position in the patient's volume", examples=[25])


class SliceRef(BaseModel):
    """An archive slice."""

    patient_id: str = Field(..., examples=["DEMO001"])
    slice_index: int = Field(..., examples=[25])


class BatchSearch(BaseModel):
    """``POST /api/search/batch``: many archive slices, one batched search (every core)."""

    slices: list[SliceRef] = Field(..., min_length=1, max_length=1000, description="the queries (1 to 1000)")
    k: int = Field(10, ge=1, le=1000, description="number of results per query")
    index: str | None = Field(None, description="index name (default: the archive's only index)")
    rerank: int = Field(0, ge=0, le=100000, description="re-rank the Hamming top-N by Euclidean distance (0: off)")
    same_patient: bool | None = Field(None, description="include each query's own patient (default: excluded)")


class UploadForm(SearchParams):
    """``POST /api/search`` as multipart/form-data: search with an uploaded file."""

    file: bytes = Field(..., description="the query: a DICOM CT slice, or a PNG (grey 0..255 = -1000..1000 HU) "
                                         "or NPY (2D, HU) image", json_schema_extra={"format": "binary"})
    dose: bytes | None = Field(None, description="optional dose: an RTDOSE of the same frame of reference (DICOM "
                                                 "query) or a PNG/NPY dose image in Gy", json_schema_extra={"format": "binary"})


def validation_message(exc: Exception) -> str:
    """One line per problem of a pydantic ValidationError (or the JSON error)."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())) or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return "bad search settings: " + "; ".join(parts)
    return f"the body is not valid JSON ({exc})"
