"""`python -m app --host H --port P`: serve the service, refusing a public address without keys before starting.

`uvicorn app.main:app` cannot tell the app where it listens until a request arrives (then `app.door` refuses
with 503); this front door checks the bind address first and says what to do, without loading a model. `make run`
and the Dockerfile start the service this way.
"""

from __future__ import annotations

import argparse
import socket
import sys

from pydantic import ValidationError

from app.door import PUBLIC_WITHOUT_KEYS, is_loopback
from app.keys import KeyFileInvalid, load_keys
from clipspace.settings import Settings


def binds_loopback_only(host: str) -> bool:
    """Every address `host` names is a loopback one (a name is resolved; one that does not resolve is not)."""
    if is_loopback(host):
        return True
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(found) and all(is_loopback(str(address[4][0])) for address in found)


def refusal(settings: Settings, host: str) -> str | None:
    """Why the service must not start on `host` with these settings, or None."""
    if settings.api_keys_file:
        try:
            load_keys(settings.api_keys_file)
        except KeyFileInvalid as error:
            return str(error)
        return None
    if settings.allow_anonymous or binds_loopback_only(host):
        return None
    return f"--host {host}: {PUBLIC_WITHOUT_KEYS}; or serve on 127.0.0.1 only"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="serve clipspace (CLIPSPACE_* settings)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"error: the CLIPSPACE_* settings are not valid:\n{error}", file=sys.stderr)
        return 2
    problem = refusal(settings, args.host)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import uvicorn  # after the checks: a refusal comes at once

    uvicorn.run("app.main:app", host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
