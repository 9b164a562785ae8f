"""create_app(settings): wires settings, the serving state, routers, guards and error handlers together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse

from app.door import Door, document_door, door_policy
from app.errors import install_error_handlers
from app.limits import BodyGuard
from app.metrics import RequestMetrics
from app.routes import duplicates, fusion, health, items, search
from app.served_routes import served_route
from app.serving import ServingHolder
from app.shortcut import TextSearchShortcut, plan_shortcut
from clipspace import __version__
from clipspace.settings import Settings
from clipspace.thumbnails import ThumbnailCache

STATIC = Path(__file__).parent / "static"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service. Refuses to be made (ShortcutOutOfStep) if the text route asks for more than its shortcut gives."""
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
    app.state.holder = ServingHolder(settings)
    app.state.thumbnails = ThumbnailCache(settings.thumb_dir or Path(settings.index_dir) / "thumbs",
                                          settings.max_image_pixels)
    install_error_handlers(app)
    for router in (search.router, items.router, health.router, fusion.router, duplicates.router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    limits = {**search.body_limits(settings), **fusion.body_limits(settings)}
    shortcut = plan_shortcut(served_route(app, search.search_text))
    app.add_middleware(TextSearchShortcut, shortcut=shortcut)  # inside BodyGuard, which bounds and checks the body
    app.add_middleware(BodyGuard, limits={served_route(app, endpoint).path: limit
                                          for endpoint, limit in limits.items()})
    # Open without a key: the page (it asks for one), the schema and its viewers (no data), and the probes unless
    # CLIPSPACE_PROTECT_METRICS. Everything else, unknown paths included, needs one when keys are configured.
    viewers = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    probes = () if settings.protect_metrics else [route.path for route in health.router.routes]
    policy = door_policy(settings, ["/", *filter(None, viewers), *probes])
    document_door(app, policy)
    app.add_middleware(Door, policy=policy)  # outside BodyGuard and the shortcut: no body is read before the key
    if settings.cors_origins:  # outside the door: a preflight carries no key, and refusals carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"], expose_headers=["retry-after"],
                           max_age=600)
    app.add_middleware(RequestMetrics)  # outermost: also counts what BodyGuard and the door refuse
    return app
