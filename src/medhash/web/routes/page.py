"""``GET /``: the search page (plain HTML, CSS and JavaScript from ``static/``, served by the app)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
"""The page's files, mounted at ``/static``."""

router = APIRouter()


@router.get("/", include_in_schema=False)
def page():
    """The single-page app."""
    return FileResponse(STATIC / "index.html", media_type="text/html")
