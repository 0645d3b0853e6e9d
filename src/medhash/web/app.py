"""The app factory for ``medhash serve``: :func:`create_app` wires the server state
(:mod:`.state`), the routes (:mod:`.routes`), the error handlers and the middleware.

The app is a thin shell over the Python API: :func:`medhash.search` answers ``POST /api/search``
with the same dict that ``medhash search --json`` prints, :class:`~medhash.store.Archive` gives the
slices, :func:`medhash.render.render_png` draws them.

Safety
------
* The archive is opened read-only (:class:`~medhash.store.Archive` ``read_only=True``): the server
  never writes it.
* No file system path is taken from a client: slices are named by (patient_id, slice_index),
  indexes by a name checked against the archive's list; uploads are written to a private
  temporary folder under fixed names and deleted after the request (:mod:`.uploads`).
* Request bodies over ``max_upload`` bytes get 413; uploads that are not DICOM, PNG or NPY (by
  content, not by name) get 415; unreadable or unusable files get 422 with the reason.
* With a token, every ``/api/*`` route except ``/api/health`` needs ``Authorization: Bearer TOKEN``.

Errors
------
Every :class:`~medhash.errors.MedhashError` answers its class's HTTP status
(:func:`~medhash.errors.http_status_of`: the caller's errors 4xx, the server's 5xx) with
``{"detail": message}``, plus ``"field"`` when the error is about one request field (its
``param``, named as the API names it: ``index``, ``patient_id``, ``file``); server paths in messages
become the archive's folder name, and a command-line flag that slipped into a message
(``--slice``) becomes the request field (``'slice_index'``): no answer names a CLI option.
Out-of-range integers and over-deep or oversized JSON bodies are 422 / 413 (:mod:`.models`,
:mod:`.middleware`), never a 500.
"""
from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..version import __version__
from ..errors import MedhashError, http_status_of
from .deps import require_token
from .middleware import BodyLimit, JsonLimits, SecurityHeaders
from .routes import archive, health, page, search, slices
from .state import ServerState

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
"""Largest request body accepted by default, bytes (64 MiB)."""

REQUEST_FIELDS = {"query": "file", "patient": "patient_id", "dose": "dose", "index": "index", "k": "k",
                  "rerank": "rerank", "same_patient": "same_patient", "per_slice": "per_slice",
                  "slice_index": "slice_index", "method": "method", "neighbours_by": "neighbours_by",
                  "isodose": "isodose"}
"""Python API parameter -> the request field (form field, JSON key or query parameter) that carries
it; an error about another parameter (``rebuild`` ...) names no field."""


CLI_FLAGS = {"slice": "slice_index", "patient": "patient_id", "include-same-patient": "same_patient",
             "exclude-same-patient": "same_patient", "query": "file"}
"""Command-line flags whose request field has another name (the others: the flag's words)."""
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def web_words(message: str) -> str:
    """``message`` with every command-line flag (``--slice``) as its request field (``'slice_index'``).

    Core messages name no flag (the CLI adds ``(option --x)`` itself); this is the web's guard."""
    def field(m: re.Match) -> str:
        flag = m.group(1)
        return repr(CLI_FLAGS.get(flag, REQUEST_FIELDS.get(flag.replace("-", "_"), flag.replace("-", "_"))))
    return _FLAG.sub(field, message)


def error_body(exc: MedhashError, state: ServerState) -> dict:
    """``{"detail": message}`` without server paths or CLI flags, plus ``"field"`` when ``exc.param`` is
    a request field."""
    body = {"detail": web_words(state.public(str(exc)))}
    field = REQUEST_FIELDS.get(getattr(exc, "param", None) or "")
    if field:
        body["field"] = field
    return body


def validation_body(exc: RequestValidationError) -> dict:
    """422 of FastAPI's own parameter checks as ``{"detail": "bad request: k: ...; ..."}`` (the bad
    values are not echoed: a NaN would not even be JSON), with ``"field"`` when one field is at fault."""
    parts, fields = [], set()
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
        if loc:
            fields.add(loc[0])
    body = {"detail": web_words("bad request: " + "; ".join(parts))}
    if len(fields) == 1:
        body["field"] = fields.pop()
    return body


def add_error_handlers(app: FastAPI, state: ServerState) -> None:
    """One handler for every MedhashError (its class's status), one for FastAPI's parameter checks
    (422), one for the rest (500, logged)."""

    @app.exception_handler(MedhashError)
    async def medhash_error(request: Request, exc: MedhashError):
        return JSONResponse(error_body(exc, state), status_code=http_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse(validation_body(exc), status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)


def create_app(archive_dir: str | Path, *, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The web app for the archive at ``archive_dir`` (opened read-only, now: a bad path fails here).

    Parameters
    ----------
    archive_dir : str or Path
        A medhash archive directory.
    token : str, optional
        When set, ``/api/*`` (except ``/api/health``) requires ``Authorization: Bearer TOKEN``.
    max_upload : int
        Largest request body accepted, bytes (default 64 MiB); larger ones get 413.
    """
    if int(max_upload) < 1:
        raise ValueError(f"max_upload must be a positive number of bytes, not {max_upload}")
    state = ServerState(archive_dir, token, max_upload)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(state.load_indexes)
        yield
        state.archive.close()

    app = FastAPI(title="medhash", version=__version__, lifespan=lifespan,
                  description="Content-based image retrieval for radiotherapy: search an archive of CT slices "
                              "(with dose) by kernel-LSH Hamming codes. Slices are named by (patient_id, "
                              "slice_index). Errors answer `{\"detail\": \"...\"}`, with `\"field\"` when "
                              "one request field is at fault.",
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.medhash = state
    add_error_handlers(app, state)
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)],
                    responses={401: {"description": "token required (only when the server has one)"}})
    for module in (archive, slices, search):
        api.include_router(module.router)
    app.include_router(health.router, prefix="/api")
    app.include_router(api)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    app.add_middleware(JsonLimits)
    app.add_middleware(BodyLimit, max_bytes=state.max_upload)
    app.add_middleware(SecurityHeaders)
    return app
