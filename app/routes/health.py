"""Is the service alive, ready, and how is it doing: `GET /healthz`, `GET /readyz`, `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app import metrics
from app.routes.deps import Holder, Serving
from app.schemas import Status, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    return Status(status="alive")


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(holder: Holder, serving: Serving) -> Status:
    await serving.probe()
    detail = f"index version {serving.index.version.name}, {serving.index.version.count} items"
    return Status(status="ready", detail=f"{detail}; {holder.problem}" if holder.problem else detail)


@router.get("/metrics", response_class=Response, responses={200: {"content": {metrics.MEDIA_TYPE: {}}}})
async def prometheus_metrics() -> Response:
    """Prometheus text format: requests, latency per route and per query stage, batches, the index."""
    return Response(metrics.exposition(), media_type=metrics.MEDIA_TYPE)
