"""Guards request bodies before any parsing: the right content type, and never more bytes than the limit."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BYTES = 64 * 1024  # a query of 1000 characters is at most 4 kB of UTF-8; anything far beyond is abuse


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    content_type: str | None = None  # required prefix of the Content-Type header, when set
    content_type_hint: str = ""


class BodyGuard:
    """ASGI middleware: 415 for a wrong content type, 413 past a route's byte limit (`limits`, by path).

    The body is read here, up to the limit, and replayed to the app: an oversized body is refused after
    `max_bytes` + 1 bytes (never buffered whole, never spooled to disk), with or without a Content-Length.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, BodyLimit]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if limit.content_type and not headers.get("content-type", "").lower().startswith(limit.content_type):
            await _reject(send, 415, limit.content_type_hint or f"send {limit.content_type}")
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit.max_bytes:
            await _reject(send, 413, f"body of {int(declared):,} bytes exceeds the {limit.max_bytes:,}-byte limit")
            return
        try:
            body = await read_body(receive, limit.max_bytes)
        except BodyTooLarge:
            await _reject(send, 413, f"body exceeds the {limit.max_bytes:,}-byte limit")
            return
        if body is not None:  # None: the client went away
            await self.app(scope, replay(body, receive), send)


class BodyTooLarge(Exception):
    """The body crossed the limit given to `read_body`."""


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The request's whole body, or None if the client went away first.

    Past `max_bytes` it raises BodyTooLarge as soon as the limit is crossed, so an oversized body is never
    buffered whole.
    """
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if max_bytes is not None and len(body) > max_bytes:
            raise BodyTooLarge
    return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
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
