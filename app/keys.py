"""API keys: the key file (hashes only), the constant-time check, and `python -m app.keys` to make a key.

A key file holds one `sha256:<64 hex digits>` per line, optionally followed by a name for people (never the key);
blank lines and `#` comments are allowed. A line that is not a hash (a key pasted in plain text, say) makes the
service refuse to start: a readable key file must not be a list of working keys. Keys are 32 random bytes, so
one SHA-256 is enough (a slow password hash protects guessable secrets, which these are not).

    python -m app.keys add var/keys.txt --name alice   # prints a new key once, stores its hash
    python -m app.keys hash < key.txt                   # the line for a key made elsewhere
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "sha256:"
KEY_BYTES = 32
_LINE = re.compile(r"^sha256:(?P<digest>[0-9a-f]{64})(\s+(?P<name>\S.*))?$")


class KeyFileInvalid(ValueError):
    """The key file cannot be used: missing, unreadable, a line that is not a hash, or no key at all."""


@dataclass(frozen=True)
class ApiKey:
    """A key as the service knows it: its hash and a name for people. `bucket` identifies it for rate limits."""

    digest: bytes
    name: str

    @property
    def bucket(self) -> str:
        return f"key:{self.digest.hex()[:16]}"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def line_for(key: str, name: str = "") -> str:
    return f"{PREFIX}{digest(key).hex()}" + (f"  {name}" if name else "")


def load_keys(path: Path) -> tuple[ApiKey, ...]:
    """The keys in `path`, or KeyFileInvalid saying what is wrong and how to put it right."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileInvalid(f"CLIPSPACE_API_KEYS_FILE {path} cannot be read: {error}") from error
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise KeyFileInvalid(f"{path}:{number} is not `sha256:<64 lowercase hex digits> [name]`: the file holds "
                                 f"hashes, never keys; make a key with `python -m app.keys add {path}`, or turn a "
                                 f"key into its line with `python -m app.keys hash`")
        keys.append(ApiKey(bytes.fromhex(match["digest"]), match["name"] or f"line {number}"))
    if not keys:
        raise KeyFileInvalid(f"CLIPSPACE_API_KEYS_FILE {path} holds no key, so nothing could get in: add one with "
                             f"`python -m app.keys add {path}`")
    return tuple(keys)


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The key whose hash matches, compared in constant time against every stored hash (none is skipped, so the
    time does not tell which line matched, or how much of a hash)."""
    wanted, found = digest(presented), None
    for key in keys:
        if hmac.compare_digest(key.digest, wanted):
            found = key
    return found


def new_key() -> str:
    return "cs_" + secrets.token_urlsafe(KEY_BYTES)


def add_key(path: Path, name: str = "") -> str:
    """Append a new key's hash to `path` (created readable by its owner only) and answer the key itself."""
    if name != name.strip() or "\n" in name or "\r" in name:
        raise KeyFileInvalid("a key's name is one line without white space around it")
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    unterminated = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as keys:
        keys.write(("\n" if unterminated else "") + line_for(key, name) + "\n")
        keys.flush()
        os.fsync(keys.fileno())
    load_keys(path)  # the file as the service will read it, or the error it would give
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description="API keys for CLIPSPACE_API_KEYS_FILE")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a key: print it once, store its hash in FILE")
    add.add_argument("file", type=Path)
    add.add_argument("--name", default="", help="who or what the key is for (stored beside the hash)")
    commands.add_parser("hash", help="read a key on stdin, print its line for the key file")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            key = add_key(args.file, args.name)
            print(key)
            print(f"stored its hash in {args.file}; the key is shown only this once", file=sys.stderr)
        else:
            key = sys.stdin.read().strip()
            if not key or any(char.isspace() for char in key):
                raise KeyFileInvalid("give one key on stdin, without white space inside it")
            print(line_for(key))
    except KeyFileInvalid as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
