"""The web app and REST API (``medhash serve``): a thin FastAPI shell over the Python API.

:func:`create_app` builds the app for one archive, opened read-only; ``medhash serve`` runs it
with uvicorn. The page (``static/``) is plain HTML, CSS and JavaScript served by the app itself: nothing
is fetched from elsewhere.
"""
from __future__ import annotations

from .app import DEFAULT_MAX_UPLOAD, TOKEN_ENV, create_app

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD", "TOKEN_ENV"]
