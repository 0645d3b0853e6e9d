"""``GET /api/health``: the one API route that needs no token."""
from __future__ import annotations

from fastapi import APIRouter

from ...version import __version__
from ..deps import State

router = APIRouter()


@router.get("/health", summary="Is the server up?")
def health(st: State) -> dict:
    """``{"status": "ok", "version", "auth"}``: auth says whether the other routes need a token."""
    return {"status": "ok", "version": __version__, "auth": st.token is not None}
