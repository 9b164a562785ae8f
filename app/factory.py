"""create_app(settings): wires settings, the engine holder, routes, guards and error handlers together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from app import fusion, routes
from app.engine import EngineHolder
from app.errors import install_error_handlers
from app.limits import BodyGuard, BodyLimit
from app.metrics import RequestMetrics
from app.shortcut import TextSearchShortcut
from clipspace import __version__
from clipspace.settings import Settings
from clipspace.thumbnails import ThumbnailCache

STATIC = Path(__file__).parent / "static"
MAX_JSON_BYTES = 64 * 1024  # a query of 1000 characters is at most 4 kB of UTF-8; anything far beyond is abuse

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The index and its model load in the background: /healthz answers at once, /readyz says 503 until
        # they are loaded, and a missing or bad index is a 503 with a detail, never a failed start.
        follower = asyncio.create_task(app.state.holder.follow())
        yield
        follower.cancel()
        app.state.holder.close()

    app = FastAPI(title="clipspace", version=__version__, lifespan=lifespan,
                  description="Search images by text or by example image in one shared CLIP embedding space.")
    app.state.holder = EngineHolder(settings)
    app.add_middleware(TextSearchShortcut)  # inside BodyGuard, which bounds and checks the body first
    app.add_middleware(BodyGuard, limits={
        "/search/image": BodyLimit(settings.max_upload_bytes, "multipart/form-data",
                                   "send the image as multipart/form-data with a field named 'file'"),
        "/search/text": BodyLimit(MAX_JSON_BYTES),
        **fusion.body_limits(settings.max_upload_bytes, MAX_JSON_BYTES)})
    app.add_middleware(RequestMetrics)  # outermost: also counts what BodyGuard refuses
    app.state.thumbnails = ThumbnailCache(settings.thumb_dir or Path(settings.index_dir) / "thumbs",
                                          settings.max_image_pixels)
    install_error_handlers(app)
    for router in (routes.search, routes.items, routes.health):
        app.include_router(router)
    app.include_router(fusion.router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
