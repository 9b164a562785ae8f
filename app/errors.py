"""The one place core errors become HTTP answers: JSON {"detail": ...} with the status the contract names."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from clipspace.errors import (
    ClipspaceError,
    CorruptImage,
    CursorExpired,
    CursorInvalid,
    EmptyImage,
    ImageTooLarge,
    IndexCorrupt,
    IndexNotReady,
    InvalidQuery,
    ItemNotFound,
    ModelMismatch,
    ModelUnavailable,
    NotAnImage,
)

log = logging.getLogger(__name__)

STATUS_FOR = {
    EmptyImage: 400,
    CorruptImage: 400,
    NotAnImage: 415,
    ImageTooLarge: 413,
    ItemNotFound: 404,
    IndexNotReady: 503,
    ModelUnavailable: 503,
    IndexCorrupt: 503,
    ModelMismatch: 503,
    InvalidQuery: 422,
    CursorInvalid: 400,
    CursorExpired: 410,
}


def status_for(error: ClipspaceError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_FOR:
            return STATUS_FOR[kind]
    return 500


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClipspaceError)
    async def clipspace_error(request: Request, error: ClipspaceError) -> JSONResponse:
        return error_answer(request.method, request.url.path, error)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return error_answer(request.method, request.url.path, error)


def error_answer(method: str, path: str, error: Exception) -> JSONResponse:
    """The JSON answer for an error raised while serving `method path`; server-side ones are logged."""
    if not isinstance(error, ClipspaceError):
        log.error("%s %s failed", method, path, exc_info=error)
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)
    status = status_for(error)
    if status >= 500:
        log.error("%s %s: %s", method, path, error)
    return JSONResponse({"detail": str(error)}, status_code=status)
