"""FastAPI app for one archive: the search page and the REST API (``medhash serve``).

The app is a thin shell over the Python API: :func:`medhash.retrieval.search.search` answers
``POST /api/search`` with the same dict that ``medhash search --json`` prints, :class:`Archive`
gives the slices, :func:`medhash.render.draw_slice` draws them.

Safety
------
* The archive is opened read-only (:class:`Archive` ``read_only=True``): the server never writes it.
* No file system path is taken from a client: slices are named by (patient_id, slice_index),
  indexes by a name checked against the archive's list; uploads are written to a private
  temporary folder under fixed names and deleted after the request.
* Request bodies over ``max_upload`` bytes get 413; uploads that are not DICOM, PNG or NPY (by
  content, not by name) get 415; unreadable or unusable files get 422 with the reason.
* With a token, every ``/api/*`` route except ``/api/health`` needs ``Authorization: Bearer TOKEN``.
* Concurrency: requests are served on a thread pool. Indexes are opened once (at start-up, then
  through :func:`medhash.retrieval.search.open_index`'s cache) and shared. Upload parsing runs in parallel;
  the search step itself (a query encode sets process-wide torch settings for its duration) and
  the matplotlib drawing (not thread-safe) each run under a lock; each takes milliseconds.
"""
from __future__ import annotations

import base64
import hmac
import io
import logging
import re
import tempfile
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .. import __version__
from ..store.archive import Archive
from ..errors import MedhashError, NotFoundError, UnsupportedMediaType
from ..core.grid import GRID_SIZE
from ..render import ISODOSE_COLOURS, ISODOSE_GY, SOFT_TISSUE_WINDOW

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
TOKEN_ENV = "MEDHASH_TOKEN"
STATIC = Path(__file__).with_name("static")
WINDOWS = {  # name -> (level, width) HU, offered by the page
    "soft tissue": SOFT_TISSUE_WINDOW, "bone": (500.0, 2000.0), "lung": (-600.0, 1500.0), "brain": (40.0, 80.0)}
_SUFFIX = {"dicom": ".dcm", "png": ".png", "npy": ".npy"}
_PNG_CACHE_SIZE = 512


def sniff(head: bytes) -> str | None:
    """The kind of an upload from its first bytes: ``"dicom"``, ``"png"``, ``"npy"`` or None.

    DICOM: ``DICM`` at byte 128 (Part 10), or a data set without preamble that starts with a
    group-0x0008 tag (as some old RT exports do). PNG and NPY: their magic numbers.
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x00\x08"):
        return "dicom"
    return None


def _label(filename: str | None, default: str) -> str:
    """A client's file name reduced to a label (never used as a path)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^\w.\- ]", "_", name)[:120]
    return name or default


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


class _State:
    """What the routes share: the read-only archive, the locks and the PNG cache."""

    def __init__(self, archive_dir: str | Path, token: str | None, max_upload: int) -> None:
        self.archive = Archive(archive_dir, read_only=True)
        self.token = token or None
        self.max_upload = int(max_upload)
        self.search_lock = threading.Lock()   # one search (encode + Hamming scan) at a time
        self.render_lock = threading.Lock()   # matplotlib is not thread-safe
        self.archive_lock = threading.RLock()  # catalog reads (one SQLite connection)
        self._png: OrderedDict[tuple, bytes] = OrderedDict()

    # ------------------------------------------------------------------ archive
    def indexes(self) -> list[str]:
        from ..retrieval.index import list_indexes
        return list_indexes(self.archive)

    def check_index(self, name: str | None) -> str | None:
        """``name`` if the archive has that index (None stays None); NotFoundError otherwise."""
        if name is None:
            return None
        names = self.indexes()
        if name not in names:
            raise NotFoundError(f"no index named {name!r} in this archive; indexes: {', '.join(names) or 'none'}")
        return name

    def public(self, message: str) -> str:
        """An error message without the server's path to the archive: its folder name instead (as
        ``GET /api/archive`` gives it), so that the page shows a readable message."""
        path = self.archive.path
        name = path.name or "archive"
        for p in sorted({str(path), str(path.resolve())}, key=len, reverse=True):
            if p != name and "/" in p:
                message = message.replace(p, name)
        return message

    def get_slice(self, patient_id: str, slice_index: int):
        with self.archive_lock:
            return self.archive.get(patient_id, slice_index)

    # ------------------------------------------------------------------ pictures
    def png(self, key: tuple, ct: np.ndarray, dose: np.ndarray | None, **kw) -> bytes:
        """PNG bytes of one slice (see :func:`render_png`), cached by ``key`` when given."""
        data = self.cached_png(key)
        if data is not None:
            return data
        with self.render_lock:
            data = self.cached_png(key)  # drawn by another thread meanwhile?
            if data is None:
                data = render_png(ct, dose, **kw)
                if key is not None:
                    self._png[key] = data
                    while len(self._png) > _PNG_CACHE_SIZE:
                        self._png.popitem(last=False)
        return data

    def cached_png(self, key: tuple | None) -> bytes | None:
        return None if key is None else self._png.get(key)

    # ------------------------------------------------------------------ search
    def search(self, query, params: SearchParams) -> dict:
        from ..retrieval.search import search
        index = self.check_index(params.index)
        with self.search_lock:
            res = search(self.archive, query, index=index, k=params.k, rerank=params.rerank,
                         same_patient=params.same_patient)
        if params.query_image:
            png = self.png(None, query.ct, query.dose)
            res["query_image"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return res

    def search_archive(self, body: ArchiveSlice) -> dict:
        from ..retrieval.search import archive_query
        with self.archive_lock:
            query = archive_query(self.archive, body.patient_id, body.slice_index)
        return self.search(query, body)

    def search_batch(self, body: BatchSearch) -> dict:
        from ..retrieval.search import archive_query, search_many
        index = self.check_index(body.index)
        with self.archive_lock:
            queries = [archive_query(self.archive, r.patient_id, r.slice_index) for r in body.slices]
        with self.search_lock:
            res = search_many(self.archive, queries, index=index, k=body.k, rerank=body.rerank,
                              same_patient=body.same_patient)
        return {"results": res}

    def search_upload(self, data: bytes, name: str, dose: bytes | None, dose_name: str | None,
                      params: SearchParams) -> dict:
        from ..retrieval.search import parse_query
        kind = sniff(data[:132])
        if kind is None:
            raise UnsupportedMediaType(f"{name}: unsupported file type; upload a DICOM CT slice, a PNG or an NPY "
                                       "image (recognised by content: DICM at byte 128, the PNG or the NPY magic)")
        dose_kind = None
        if dose is not None:
            dose_kind = sniff(dose[:132])
            if dose_kind is None:
                raise UnsupportedMediaType(f"{dose_name}: unsupported dose file type; upload an RTDOSE (DICOM) or a "
                                           "PNG or NPY dose image in Gy")
            if (kind == "dicom") != (dose_kind == "dicom"):
                raise MedhashError(f"{dose_name}: with a {kind.upper()} query the dose must be "
                                   + ("an RTDOSE (DICOM) file" if kind == "dicom" else "a PNG or NPY image in Gy"))
        with tempfile.TemporaryDirectory(prefix="medhash-upload-") as tmp:
            qpath = Path(tmp) / ("query" + _SUFFIX[kind])
            qpath.write_bytes(data)
            dpath = None
            if dose is not None:
                dpath = Path(tmp) / ("dose" + _SUFFIX[dose_kind])
                dpath.write_bytes(dose)

            def clean(msg: str) -> str:
                msg = msg.replace(str(qpath), name)
                if dpath is not None:
                    msg = msg.replace(str(dpath), dose_name or "dose")
                return msg.replace(tmp, "upload").replace("--dose FILE", "the form field 'dose'").replace(
                    "--dose", "the dose")

            try:
                query = parse_query(self.archive, qpath, dose=dpath)
            except MedhashError as exc:
                raise MedhashError(clean(str(exc))) from None
            except Exception as exc:  # a reader tripped over malformed content: the client's file, not a bug
                raise MedhashError(clean(f"{qpath}: cannot read this {kind.upper()} file "
                                         f"({type(exc).__name__}: {exc})")) from None
            query.info["file"] = name
            if dose is not None:
                query.info["dose_file"] = dose_name
            try:
                return self.search(query, params)
            except MedhashError as exc:
                raise type(exc)(clean(str(exc))) from None


def render_png(ct: np.ndarray, dose: np.ndarray | None, *, level: float = SOFT_TISSUE_WINDOW[0],
               width: float = SOFT_TISSUE_WINDOW[1], show_dose: bool = True, size: int = 256,
               crop: str = "body") -> bytes:
    """One slice as a square PNG of ``size`` x ``size`` pixels.

    Parameters
    ----------
    ct : (128, 128) HU.  dose : (128, 128) Gy or None (drawn as isodose lines when ``show_dose``).
    level, width : CT window in HU (default W400/L40).
    crop : ``"body"`` (a square around the body, as in ``medhash search --png``) or ``"full"`` (the
        whole 500 mm model grid).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..render import crop_box, draw_slice

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    box = crop_box([ct]) if crop == "body" else None
    draw_slice(ax, ct, dose if show_dose else None, window=(level, width), crop=box)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# ---------------------------------------------------------------------- ASGI middleware
def _json_bytes(status: int, detail: str) -> tuple[dict, bytes]:
    import json
    body = json.dumps({"detail": detail}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            body)


class _BodyLimit:
    """413 for request bodies over ``max_bytes``: by Content-Length before reading, else while reading."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    def _too_large(self, n: int | None) -> str:
        mib = self.max_bytes / 2 ** 20
        got = f"{n / 2 ** 20:.1f} MiB is" if n is not None else "the request is"
        return (f"upload too large: {got} over this server's limit of {mib:g} MiB per request "
                "(medhash serve --max-upload-mb)")

    async def _reply(self, send, status: int, detail: str) -> None:
        start, body = _json_bytes(status, detail)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await self._reply(send, 400, "bad Content-Length header")
                return
            if n > self.max_bytes:
                await self._reply(send, 413, self._too_large(n))
                return
            await self.app(scope, receive, send)
            return
        chunks, total = [], 0   # no length given (chunked): read up to the limit, then hand it on
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reply(send, 413, self._too_large(None))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _SecurityHeaders:
    """Headers on every response: the page may load only what this server serves."""

    HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; "
                                            b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
               (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY")]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------- the app
def get_state(request: Request) -> _State:
    """The app's shared state (a dependency: tests and routes reach the archive through it)."""
    return request.app.state.medhash


State = Annotated[_State, Depends(get_state)]


def create_app(archive_dir: str | Path, *, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The web app for the archive at ``archive_dir`` (opened read-only, now: a bad path fails here).

    Parameters
    ----------
    archive_dir : a medhash archive directory.
    token : when set, ``/api/*`` (except ``/api/health``) requires ``Authorization: Bearer TOKEN``.
    max_upload : largest request body accepted, bytes (default 64 MiB); larger ones get 413.
    """
    if int(max_upload) < 1:
        raise ValueError(f"max_upload must be a positive number of bytes, not {max_upload}")
    state = _State(archive_dir, token, max_upload)

    def load_indexes() -> None:
        """Open every index (codes into faiss) and load its models, once, before the first request."""
        from ..features import encode_arrays
        from ..retrieval.search import open_index
        for name in state.indexes():
            try:
                idx = open_index(state.archive, name)
                for ch in idx.manifest["models"]:
                    model, config = idx.model(ch)
                    with state.search_lock:  # the first forward pass pays torch's start-up, not a user
                        encode_arrays(model, config, np.zeros((1, GRID_SIZE, GRID_SIZE), np.float32))
            except MedhashError as exc:  # e.g. a model trained again: searching it reports the same error
                log.warning("index %s not loaded: %s", name, exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(load_indexes)
        yield
        state.archive.close()

    app = FastAPI(title="medhash", version=__version__, lifespan=lifespan,
                  description="Content-based image retrieval for radiotherapy: search an archive of CT slices "
                              "(with dose) by kernel-LSH Hamming codes. Slices are named by (patient_id, "
                              "slice_index). Errors answer `{\"detail\": \"...\"}`.",
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.medhash = state

    def require_token(request: Request) -> None:
        st: _State = request.app.state.medhash
        if st.token is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), st.token.encode()):
            raise HTTPException(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN' "
                                     f"(the token given to medhash serve with --token or ${TOKEN_ENV})",
                                headers={"WWW-Authenticate": "Bearer"})

    # --------------------------------------------------------------- errors as {"detail": ...}
    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError):
        return JSONResponse({"detail": state.public(str(exc))}, status_code=404)

    @app.exception_handler(UnsupportedMediaType)
    async def unsupported(request: Request, exc: UnsupportedMediaType):
        return JSONResponse({"detail": state.public(str(exc))}, status_code=415)

    @app.exception_handler(MedhashError)
    async def medhash_error(request: Request, exc: MedhashError):
        return JSONResponse({"detail": state.public(str(exc))}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)

    open_api = APIRouter(prefix="/api")
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)],
                    responses={401: {"description": "token required (only when the server has one)"}})

    @open_api.get("/health", summary="Is the server up?")
    def health(st: State) -> dict:
        """``{"status": "ok", "version", "auth"}``: auth says whether the other routes need a token."""
        return {"status": "ok", "version": __version__, "auth": st.token is not None}

    @api.get("/archive", summary="Archive overview")
    def archive_info(st: State) -> dict:
        """What ``medhash info --json`` prints (without the server's path), plus display settings:
        ``isodose`` (Gy levels and colours), ``windows`` (name -> level, width HU), ``max_upload_bytes``."""
        with st.archive_lock:
            info = st.archive.info()
        info["archive"] = Path(info["archive"]).name
        info["indexes"] = st.indexes()
        info["isodose"] = [{"gy": g, "colour": c} for g, c in zip(ISODOSE_GY, ISODOSE_COLOURS)]
        info["windows"] = {k: {"level": v[0], "width": v[1]} for k, v in WINDOWS.items()}
        info["max_upload_bytes"] = st.max_upload
        return info

    @api.get("/indexes", summary="The archive's indexes with their manifests")
    def indexes(st: State) -> list[dict]:
        """``[{"name", "manifest"}]``; the manifest records channel, models (name, sha256), bits, gamma,
        seed, item count and library versions."""
        import json
        from ..retrieval.index import index_path
        out = []
        for name in st.indexes():
            out.append({"name": name, "manifest": json.loads((index_path(st.archive, name) / "manifest.json")
                                                              .read_text())})
        return out

    @api.get("/patients", summary="The archive's patients")
    def patients(st: State) -> list[dict]:
        """``[{"patient_id", "slices", "slice_index_min", "slice_index_max", "slices_with_dose"}]``, sorted by id."""
        with st.archive_lock:
            t = st.archive.table()
        out = []
        pids = t["patient_id"].astype(str)
        for pid in sorted(set(pids)):
            sel = pids == pid
            idx = t["slice_index"][sel]
            out.append({"patient_id": pid, "slices": int(sel.sum()), "slice_index_min": int(idx.min()),
                        "slice_index_max": int(idx.max()), "slices_with_dose": int(t["has_dose"][sel].sum())})
        return out

    @api.get("/patients/{patient_id}", summary="One patient's slices")
    def patient(patient_id: str, st: State) -> dict:
        """``{"patient_id", "slices": [{"slice_index", "z_mm", "has_dose"}]}`` in position order."""
        with st.archive_lock:
            t = st.archive.table()
        sel = np.flatnonzero(t["patient_id"].astype(str) == patient_id)
        if len(sel) == 0:
            raise NotFoundError(f"patient {patient_id!r} is not in the archive")
        sel = sel[np.argsort(t["slice_index"][sel], kind="stable")]
        return {"patient_id": patient_id,
                "slices": [{"slice_index": int(t["slice_index"][r]), "z_mm": round(float(t["z_mm"][r]), 3),
                            "has_dose": bool(t["has_dose"][r])} for r in sel]}

    @api.get("/patients/{patient_id}/similar", summary="The most similar other patients (patient-level search)")
    def similar_patients(patient_id: str, st: State, index: str | None = None,
                         k: int = Query(5, ge=1, le=100), per_slice: int = Query(20, ge=1, le=1000),
                         rerank: int = Query(0, ge=0, le=100000, description="re-rank each slice's Hamming "
                                                                             "top-N by Euclidean distance (0: off)")
                         ) -> dict:
        """The same JSON as ``medhash search --patient PID --json``: other patients ranked by z-aligned
        slice votes, each with ``patient_score`` and its matched slice pairs."""
        from ..retrieval.patients import patient_search
        name = st.check_index(index)
        with st.search_lock, st.archive_lock:
            return patient_search(st.archive, patient=patient_id, index=name, k=k, per_slice=per_slice,
                                  rerank=rerank)

    @api.get("/slices/{patient_id}/{slice_index}.png", summary="One slice as a PNG",
             response_class=Response, responses={200: {"content": {"image/png": {}}, "description": "the picture"}})
    def slice_png(patient_id: str, slice_index: int, st: State,
                  level: Annotated[float, Query(ge=-3000, le=5000, description="window level, HU")] = SOFT_TISSUE_WINDOW[0],
                  width: Annotated[float, Query(gt=0, le=10000, description="window width, HU")] = SOFT_TISSUE_WINDOW[1],
                  dose: Annotated[bool, Query(description="draw isodose lines (10 to 70 Gy)")] = True,
                  size: Annotated[int, Query(ge=32, le=1024, description="picture side, pixels")] = 256,
                  crop: Annotated[Literal["body", "full"], Query(description="body: a square around the body; "
                                                                              "full: the 500 mm grid")] = "body"):
        """CT in the window (default W400/L40) with the dose as isodose lines; ``size`` x ``size`` pixels."""
        key = (patient_id, slice_index, level, width, dose, size, crop)
        cached = st.cached_png(key)
        if cached is None:
            s = st.get_slice(patient_id, slice_index)
            cached = st.png(key, s.ct, s.dose, level=level, width=width, show_dose=dose, size=size, crop=crop)
        return Response(cached, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/slices/{patient_id}/{slice_index}", summary="One slice's metadata and neighbours")
    def slice_info(patient_id: str, slice_index: int, st: State) -> dict:
        """``{"patient_id", "slice_index", "z_mm", "has_dose", "dose_max_gy", "structures", "series_uid",
        "neighbours": {"previous": [...], "next": [...]}}``; neighbours are up to 3 slice indexes each side."""
        s = st.get_slice(patient_id, slice_index)
        d = s.to_dict()
        d["dose_max_gy"] = round(float(np.max(s.dose)), 3) if s.dose is not None else None
        with st.archive_lock:
            t = st.archive.table()
        idx = np.sort(t["slice_index"][t["patient_id"].astype(str) == patient_id])
        pos = int(np.searchsorted(idx, slice_index))
        d["neighbours"] = {"previous": [int(i) for i in idx[max(0, pos - 3):pos]],
                           "next": [int(i) for i in idx[pos + 1:pos + 4]]}
        return d

    search_body = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": UploadForm.model_json_schema()},
            "application/json": {"schema": ArchiveSlice.model_json_schema()},
        },
    }
    example = {"query": {"type": "dicom", "file": "CT_0042.dcm", "slice_index": 0, "z_mm": 12.5, "has_dose": False},
               "index": "ct256", "channel": "ct", "n_bits": 256, "k": 2, "rerank": 0, "same_patient": True,
               "results": [{"rank": 1, "patient_id": "DEMO002", "slice_index": 24, "z_mm": 10.0, "hamming": 18},
                           {"rank": 2, "patient_id": "DEMO004", "slice_index": 31, "z_mm": 15.0, "hamming": 21}],
               "timing_ms": {"prepare": 0.1, "encode": 1.4, "search": 0.1}}

    @api.post("/search", summary="Search the archive with an upload or an archive slice",
              openapi_extra={"requestBody": search_body},
              responses={200: {"description": "the same JSON as `medhash search --json`",
                               "content": {"application/json": {"example": example}}},
                         404: {"description": "unknown patient, slice or index"},
                         413: {"description": "request body over the upload limit"},
                         415: {"description": "not DICOM, PNG or NPY (or neither multipart nor JSON)"},
                         422: {"description": "a file that cannot be read or used, or bad settings"}})
    async def api_search(request: Request, st: State):
        """Multipart upload (field ``file``: DICOM CT slice, PNG or NPY; optional ``dose``; form fields
        ``k``, ``index``, ``rerank``, ``same_patient``, ``query_image``), or a JSON body naming an archive
        slice (``patient_id``, ``slice_index`` and the same settings). The answer is the dict of
        :func:`medhash.retrieval.search.search` (``medhash search --json``)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                body = ArchiveSlice.model_validate(await request.json())
            except ValueError as exc:  # bad JSON or a pydantic ValidationError
                raise HTTPException(422, _validation_message(exc)) from None
            res = await run_in_threadpool(st.search_archive, body)
        elif ctype == "multipart/form-data":
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
                raise HTTPException(422, _validation_message(exc)) from None
            data = await file.read()
            dose_data = await dose.read() if dose is not None else None
            if not data:
                raise HTTPException(422, f"{_label(file.filename, 'file')}: the uploaded file is empty")
            res = await run_in_threadpool(st.search_upload, data, _label(file.filename, "upload"), dose_data,
                                          _label(dose.filename, "dose") if dose is not None else None, params)
            await form.close()
        else:
            raise HTTPException(415, f"unsupported request type {ctype or '(none)'}: send multipart/form-data "
                                     "(field 'file') or application/json naming an archive slice")
        return JSONResponse(jsonable_encoder(res))

    @api.post("/search/batch", summary="Search with many archive slices at once",
              responses={200: {"description": "{\"results\": [one `medhash search --json` answer per query]}"},
                         404: {"description": "unknown patient, slice or index"},
                         422: {"description": "bad settings or too many slices"}})
    async def api_search_batch(body: BatchSearch, st: State):
        """A JSON body with ``slices`` (a list of ``{patient_id, slice_index}``, up to 1000) and the search
        settings; one batched Hamming search on every core (:func:`medhash.search_many`)."""
        return JSONResponse(jsonable_encoder(await run_in_threadpool(st.search_batch, body)))

    app.include_router(open_api)
    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_BodyLimit, max_bytes=state.max_upload)
    app.add_middleware(_SecurityHeaders)
    return app


def _validation_message(exc: Exception) -> str:
    """One line per problem of a pydantic ValidationError (or the JSON error)."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())) or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return "bad search settings: " + "; ".join(parts)
    return f"the body is not valid JSON ({exc})"
