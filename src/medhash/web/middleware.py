"""ASGI middleware of the web app: the request-body limit (413) and the security headers."""
from __future__ import annotations

import json


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
        await self._read_then_pass(scope, receive, send)

    async def _read_then_pass(self, scope, receive, send) -> None:
        """No length given (chunked): read up to the limit, then hand the body on."""
        chunks, total = [], 0
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
