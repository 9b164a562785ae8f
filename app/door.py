"""The door: API keys, a rate limit per key, and no anonymous answers on a public address (a pure ASGI middleware).

It sits outside `BodyGuard` and the text shortcut, so nothing reads a body, routes or searches before the key is
checked, and inside `RequestMetrics` (and CORS), so its 401, 429 and 503 are counted and carry CORS headers.
Its refusals never read the body. No key is ever logged or put in a label: a key bucket is named by its hash.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.keys import ApiKey, find_key, load_keys
from app.limits import MAX_JSON_BYTES
from app.ratelimit import TokenBuckets
from clipspace.settings import RateLimit, Settings

log = logging.getLogger(__name__)

REALM = 'Bearer realm="clipspace"'
HOLD_S = 1.0  # the longest a 429 is held back: Retry-After is never below 1 s, so a polite client loses nothing
MAX_HELD = 1000  # beyond this many held at once, refusals go out at once (bounded memory under a flood)
PUBLIC_WITHOUT_KEYS = ("this service answers on a non-loopback address without API keys, so it refuses: give it "
                       "keys (CLIPSPACE_API_KEYS_FILE=FILE, made with `python -m app.keys add FILE`) or say that "
                       "anyone who can reach it may use it (CLIPSPACE_ALLOW_ANONYMOUS=1)")


@dataclass(frozen=True)
class DoorPolicy:
    """Who may come in: `keys` (none: anyone), paths open without a key, and the rate limit per client."""

    keys: tuple[ApiKey, ...]
    open_paths: frozenset[str]
    allow_anonymous: bool = False
    rate_limit: RateLimit | None = None


def door_policy(settings: Settings, open_paths: Iterable[str]) -> DoorPolicy:
    """The policy the settings describe; KeyFileInvalid when the key file cannot be used (the service won't start)."""
    keys = load_keys(settings.api_keys_file) if settings.api_keys_file else ()
    return DoorPolicy(keys, frozenset(open_paths), settings.allow_anonymous, settings.rate_limit)


@functools.lru_cache(maxsize=64)
def is_loopback(host: str) -> bool:
    """`host` (an address as a socket reports it, or `localhost`) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class Door:
    """ASGI middleware: 503 on a public address without keys (unless allowed), 401 without a valid key, 429 past
    the rate limit (with `Retry-After`), in that order; anything else goes in untouched."""

    def __init__(self, app: ASGIApp, policy: DoorPolicy) -> None:
        self.app = app
        self.policy = policy
        self._buckets = TokenBuckets(policy.rate_limit) if policy.rate_limit else None
        self._refusing_public = not policy.keys and not policy.allow_anonymous
        self._warned = False
        self._held = 0  # refusals waiting to be sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._refusing_public and not _arrived_on_loopback(scope):
            if not self._warned:
                log.error("refusing requests on %s: %s", scope["server"][0], PUBLIC_WITHOUT_KEYS)
                self._warned = True
            await _refuse(scope, send, 503, PUBLIC_WITHOUT_KEYS)
            return
        if scope["path"] in self.policy.open_paths:
            await self.app(scope, receive, send)
            return
        client = _client_address(scope)
        if self.policy.keys:
            key, problem, challenge = self._key(scope)
            if key is None:
                await _refuse(scope, send, 401, problem, [(b"www-authenticate", challenge.encode())])
                return
            client = key.bucket
        wait = self._buckets.take(client) if self._buckets else 0.0
        if wait:
            await self._too_many(scope, send, wait)
            return
        await self.app(scope, receive, send)

    async def _too_many(self, scope: Scope, send: Send, wait: float) -> None:
        """429 with `Retry-After` in whole seconds (≥ 1), answered after the time a client must wait anyway (at
        most HOLD_S, while fewer than MAX_HELD are held): one HTTP/1.1 connection then carries at most one refusal
        a second, so a client hammering on a few connections costs the service little (measured: docs/decisions.md)."""
        retry_after = max(1, math.ceil(wait))
        if self._held < MAX_HELD:
            self._held += 1
            try:
                await asyncio.sleep(min(wait, HOLD_S))
            finally:
                self._held -= 1
        limit = self.policy.rate_limit
        await _refuse(scope, send, 429, f"too many requests: at most {limit.per_second:g} a second, bursts of "
                      f"{limit.burst}; try again in {retry_after} s", [(b"retry-after", str(retry_after).encode())])

    def _key(self, scope: Scope) -> tuple[ApiKey | None, str, str]:
        """The key the request presents, or None, why not and the challenge (RFC 6750 3) its 401 says."""
        given = [value for name, value in scope["headers"] if name == b"authorization"]
        if not given:
            return None, "an API key is needed: send it as `Authorization: Bearer <key>`", REALM
        refused = f'{REALM}, error="invalid_token"'
        scheme, _, token = given[0].decode("latin-1").partition(" ")
        token = token.strip(" ")
        # The scheme is case-insensitive (RFC 9110 11.1); a token is one word (RFC 6750 2.1).
        if len(given) > 1 or scheme.lower() != "bearer" or not token or any(char.isspace() for char in token):
            return None, "the Authorization header must be one `Bearer <key>`", refused
        key = find_key(self.policy.keys, token)
        return (key, "", "") if key else (None, "the API key was not accepted", refused)


def _arrived_on_loopback(scope: Scope) -> bool:
    """The request came in on a loopback address (or a Unix socket): `server` is the connection's local end."""
    server = scope.get("server")
    return server is None or server[1] is None or is_loopback(server[0])


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:unknown"


async def _refuse(scope: Scope, send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON answer that leaves the body unread. The server skips a small unread body and keeps the connection
    (a refused client reconnecting for every request would cost more than its refusal); a large or chunked one
    (past a JSON query's limit) closes it rather than being received only to be thrown away."""
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        *(headers or []), *([(b"connection", b"close")] if _large_body(scope) else [])]})
    await send({"type": "http.response.body", "body": payload})


def _large_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and
                                            (not value.isdigit() or int(value) > MAX_JSON_BYTES)):
            return True
    return False


def document_door(app: FastAPI, policy: DoorPolicy) -> None:
    """Let the OpenAPI document say what the door does: the bearer scheme and 401 where a key is needed, 429 where
    the rate limit applies (a client generator, Swagger UI's Authorize button and schemathesis read it)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        if policy.keys:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = {
                "type": "http", "scheme": "bearer", "description": "a key from CLIPSPACE_API_KEYS_FILE"}
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
        for path, operations in schema.get("paths", {}).items():
            if path in policy.open_paths:
                continue
            for operation in operations.values():
                if policy.keys:
                    operation["security"] = [{"ApiKey": []}]
                    operation["responses"]["401"] = {"description": "no API key, or not one this service knows",
                                                     "content": error}
                if policy.rate_limit:
                    operation["responses"]["429"] = {
                        "description": "past the rate limit of this key (or address): wait Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                        "content": error}
        return schema

    app.openapi = openapi
