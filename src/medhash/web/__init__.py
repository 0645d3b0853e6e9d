"""The web app and REST API (``medhash serve``): a thin FastAPI shell over the Python API.

:func:`create_app` (:mod:`.app`) builds the app for one archive, opened read-only; ``medhash serve``
runs it with uvicorn. :mod:`.state` owns what the requests share (archive, locks, caches),
:mod:`.deps` the FastAPI dependencies, :mod:`.routes` one module per group of routes. The page
(``static/``) is plain HTML, CSS and JavaScript served by the app itself: nothing is fetched from
elsewhere.
"""
from __future__ import annotations

from .app import DEFAULT_MAX_UPLOAD, create_app
from .deps import TOKEN_ENV

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD", "TOKEN_ENV"]
