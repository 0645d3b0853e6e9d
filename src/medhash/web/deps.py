"""FastAPI dependencies of the routes: the server state (:data:`State`) and the token check
(:func:`require_token`)."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from .state import ServerState

TOKEN_ENV = "MEDHASH_TOKEN"
"""The environment variable ``medhash serve`` takes the API token from."""


def get_state(request: Request) -> ServerState:
    """The app's shared state (a dependency: tests and routes reach the archive through it)."""
    return request.app.state.medhash


State = Annotated[ServerState, Depends(get_state)]
"""A route parameter annotated ``st: State`` receives the app's :class:`ServerState`."""


def require_token(request: Request) -> None:
    """401 unless the request carries the server's token (when it has one), compared in constant time."""
    st: ServerState = request.app.state.medhash
    if st.token is None:
        return
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), st.token.encode()):
        raise HTTPException(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN' "
                                 "with the token this server was started with",
                            headers={"WWW-Authenticate": "Bearer"})
