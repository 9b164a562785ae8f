"""create_app(settings): wires settings, the engine holder, routes, guards and error handlers together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app import routes
from app.engine import EngineHolder
from app.errors import install_error_handlers
from app.limits import UploadGuard
from clipspace import __version__
from clipspace.settings import Settings

STATIC = Path(__file__).parent / "static"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder = app.state.holder
        await run_in_threadpool(holder.refresh)  # a missing or bad index is a 503, not a failed start
        follower = asyncio.create_task(holder.follow())
        yield
        follower.cancel()
        holder.close()

    app = FastAPI(title="clipspace", version=__version__, lifespan=lifespan,
                  description="Search images by text or by example image in one shared CLIP embedding space.")
    app.state.holder = EngineHolder(settings)
    app.add_middleware(UploadGuard, paths=frozenset({"/search/image"}), max_bytes=settings.max_upload_bytes)
    install_error_handlers(app)
    for router in (routes.search, routes.items, routes.health):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
