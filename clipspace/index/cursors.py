"""Page cursors: where a walk through one query's results stands, opaque to clients, bound to version and query.

A cursor is `base64url(payload).signature`: the payload names the index version, a digest of the query (its
words or image, target, mode, filter: everything but the page size, which may change from page to page) and
how many results were already given; the signature is an HMAC keyed by the version itself (a digest of its
manifest, which names every file's checksum), so a client can neither forge nor edit a cursor, and every
process serving that version (a restart, several workers) reads the cursors of the others. A cursor of a version
no longer served is CursorExpired (410: start the walk again); anything that does not verify is CursorInvalid (400).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from clipspace.errors import CursorExpired, CursorInvalid

MAX_CURSOR_CHARS = 512
MAX_WALK = 100_000  # results a walk can reach: the deepest page searches this many


@dataclass(frozen=True)
class PagePosition:
    version: str
    query: str  # query_digest() of the query being walked
    given: int  # results already handed out: the next page starts there


def query_digest(query: Any) -> str:
    """A short stable digest of a JSON-able description of the query."""
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def encode_cursor(position: PagePosition, key: bytes) -> str:
    payload = json.dumps([position.version, position.query, position.given], separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_sign(payload, key))}"


def decode_cursor(cursor: str, key: bytes, *, version: str, query: str) -> int:
    """How many results the walk has given, after checking the cursor belongs to `version` and `query`."""
    payload, signature = _split(cursor)
    try:
        cursor_version, cursor_query, given = json.loads(payload)
    except (ValueError, TypeError) as error:
        raise CursorInvalid("the cursor is not one this service gave") from error
    if cursor_version != version:
        raise CursorExpired(f"the cursor belongs to index version {cursor_version!r}, no longer served (now "
                            f"{version!r}): start the search again without a cursor")
    if not hmac.compare_digest(signature, _sign(payload, key)):
        raise CursorInvalid("the cursor is not one this service gave")
    if cursor_query != query:
        raise CursorInvalid("the cursor belongs to another query: send it with the query it came with")
    if not isinstance(given, int) or given < 0:
        raise CursorInvalid("the cursor is not one this service gave")
    return given


def _split(cursor: str) -> tuple[bytes, bytes]:
    if len(cursor) > MAX_CURSOR_CHARS or cursor.count(".") != 1:
        raise CursorInvalid("the cursor is not one this service gave")
    payload, signature = cursor.split(".")
    try:
        return _unb64(payload), _unb64(signature)
    except ValueError as error:
        raise CursorInvalid("the cursor is not one this service gave") from error


def _sign(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cursor_key(manifest_text: str) -> bytes:
    """The signing key of one version's cursors."""
    return hashlib.sha256(b"clipspace page cursor\n" + manifest_text.encode()).digest()
