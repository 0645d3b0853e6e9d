"""ASGI middleware of the web app: the request-body limit (413), the JSON limits (413 for size, 422
for nesting depth) and the security headers."""
from __future__ import annotations

import json
import re

import numpy as np

MAX_JSON_BYTES = 1024 * 1024
"""Largest JSON request body, bytes (1 MiB: a batch of 1000 slices takes about 50 kB)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in a JSON request body (the API's bodies need 3)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth(body: bytes) -> int:
    """Deepest nesting of ``[`` and ``{`` in a JSON text (brackets inside strings ignored), without
    parsing it: a body too deep for Python's parser (RecursionError) is measured in linear time.

    Unbalanced or malformed text is measured as written (the parser then rejects it).
    """
    brackets = np.frombuffer(_STRING.sub(b"", body).translate(None, _NOT_BRACKET), np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _json_bytes(status: int, detail: str) -> tuple[dict, bytes]:
    body = json.dumps({"detail": detail}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            body)


class BodyLimit:
    """413 for request bodies over ``max_bytes``: by Content-Length before reading, else while reading."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    def _too_large(self, n: int | None) -> str:
        mib = self.max_bytes / 2 ** 20
        got = f"{n / 2 ** 20:.1f} MiB is" if n is not None else "the request is"
        return f"upload too large: {got} over this server's limit of {mib:g} MiB per request"

    async def _reply(self, send, status: int, detail: str) -> None:
        await _reply(send, status, detail)

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
        await self._read_then_pass(scope, receive, send)

    async def _read_then_pass(self, scope, receive, send) -> None:
        """No length given (chunked): read up to the limit, then hand the body on."""
        try:
            body = await _read_body(receive, self.max_bytes)
        except _TooLarge:
            await self._reply(send, 413, self._too_large(None))
            return
        if body is not None:
            await self.app(scope, _replaying(body, receive), send)


class JsonLimits:
    """JSON request bodies: 413 over :data:`MAX_JSON_BYTES`, 422 nested deeper than :data:`MAX_JSON_DEPTH`.

    The body is read here (up to the limit), measured by :func:`json_depth` and handed on; other
    content types pass untouched (:class:`BodyLimit` bounds them).
    """

    def __init__(self, app, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app, self.max_bytes, self.max_depth = app, int(max_bytes), int(max_depth)

    @staticmethod
    def _is_json(scope) -> bool:
        ctype = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        return ctype == b"application/json" or ctype.endswith(b"+json")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or not self._is_json(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive, self.max_bytes)
        except _TooLarge:
            await _reply(send, 413, f"JSON body too large: over this server's limit of "
                                    f"{self.max_bytes // 1024} KiB for JSON requests")
            return
        if body is None:
            return
        if json_depth(body) > self.max_depth:
            await _reply(send, 422, f"the JSON body is nested deeper than {self.max_depth} levels of arrays and "
                                    "objects (this server's limit); the API's requests need 3")
            return
        await self.app(scope, _replaying(body, receive), send)


class _TooLarge(Exception):
    """A request body over the limit (raised by :func:`_read_body`)."""


async def _read_body(receive, max_bytes: int) -> bytes | None:
    """The whole request body, read up to ``max_bytes``: None when the client went away,
    :class:`_TooLarge` past the limit."""
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > max_bytes:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive):
    """An ASGI ``receive`` that hands the body already read on once, then defers to ``receive``."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send, status: int, detail: str) -> None:
    start, body = _json_bytes(status, detail)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
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
