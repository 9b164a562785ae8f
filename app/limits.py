"""Guards uploads before any parsing: only multipart bodies, and never more bytes than the limit."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadGuard:
    """ASGI middleware for upload routes: 415 unless multipart/form-data, 413 past `max_bytes`.

    The body is read here, up to the limit, and replayed to the app: an oversized upload is refused after
    `max_bytes` + 1 bytes (never spooled to disk), whether or not the client sent a Content-Length.
    """

    def __init__(self, app: ASGIApp, paths: frozenset[str], max_bytes: int) -> None:
        self.app = app
        self.paths = paths
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            await _reject(send, 415, "send the image as multipart/form-data with a field named 'file'")
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, 413, f"upload of {int(declared):,} bytes exceeds the {self.max_bytes:,}-byte limit")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _reject(send, 413, f"upload exceeds the {self.max_bytes:,}-byte limit")
                return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body over once, then pass through (so a real disconnect is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _reject(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
