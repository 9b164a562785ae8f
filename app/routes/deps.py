"""What a route may ask for: the serving state, its holder, the thumbnail cache (FastAPI dependencies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.serving import Serving as ServingState
from app.serving import ServingHolder
from clipspace.errors import IndexNotReady
from clipspace.thumbnails import ThumbnailCache


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency on a worker thread, and two
# such hops per query cost more than the lookups they wrap (docs/decisions.md, "The service as fast as its encoder").
async def holder(request: Request) -> ServingHolder:
    return request.app.state.holder


async def serving(request: Request) -> ServingState:
    """The state serving right now; a request keeps it to the end even if a new version is published.

    It reads the holder itself rather than depending on `holder`: each nested dependency costs FastAPI's
    solver time on the event loop, on every query. `app.shortcut` calls it as it is.
    """
    state = request.app.state.holder.serving
    if state is None:
        raise IndexNotReady(request.app.state.holder.problem or "no index loaded")
    return state


async def thumbnails(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


Holder = Annotated[ServingHolder, Depends(holder)]
Serving = Annotated[ServingState, Depends(serving)]
Thumbnails = Annotated[ThumbnailCache, Depends(thumbnails)]
