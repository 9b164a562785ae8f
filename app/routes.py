"""HTTP routes: validate, call the engine, shape the answer. No FAISS or model details live here."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from app.engine import Engine, EngineHolder
from app.schemas import (
    MAX_K,
    IndexInfo,
    QueryInfo,
    SearchResponse,
    SearchResult,
    Status,
    Target,
    TextQuery,
)
from clipspace.errors import IndexNotReady, NotAnImage
from clipspace.store import SearchHit

ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")


def holder(request: Request) -> EngineHolder:
    return request.app.state.holder


def engine(holder: Annotated[EngineHolder, Depends(holder)]) -> Engine:
    """The engine serving right now; a request keeps it to the end even if a new version is published."""
    if holder.engine is None:
        raise IndexNotReady(holder.problem or "no index loaded")
    return holder.engine


Serving = Annotated[Engine, Depends(engine)]

search = APIRouter(prefix="/search", tags=["search"])
items = APIRouter(tags=["items"])
health = APIRouter(tags=["health"])


@search.post("/text", response_model=SearchResponse)
async def search_text(query: TextQuery, serving: Serving) -> SearchResponse:
    started = time.perf_counter()
    vector = await serving.embed_text(query.text)
    hits = await serving.search(vector, query.k, query.target)
    return _response(serving, "text", query.target, hits, started)


@search.post("/image", response_model=SearchResponse,
             responses={400: {"model": Status}, 413: {"model": Status}, 415: {"model": Status}})
async def search_image(request: Request, serving: Serving, file: Annotated[UploadFile, File()],
                       k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, target: Target = "image") -> SearchResponse:
    started = time.perf_counter()
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_UPLOAD_TYPES):
        raise NotAnImage(f"the uploaded file is declared as {declared}, not an image")
    settings = request.app.state.holder.settings
    vector = await serving.embed_image(await file.read(), settings.max_image_pixels)
    hits = await serving.search(vector, k, target)
    return _response(serving, "image", target, hits, started)


@items.get("/images/{item_id}", response_class=FileResponse, responses={404: {"model": Status}})
async def image_file(item_id: int, serving: Serving):
    path = serving.image_file(item_id)
    if path is None:
        return JSONResponse({"detail": f"no indexed image with id {item_id}"}, status_code=404)
    return FileResponse(path)


@items.get("/info", response_model=IndexInfo)
async def info(serving: Serving) -> IndexInfo:
    manifest = serving.version.manifest
    return IndexInfo(model=manifest["model"], index_version=serving.version.name, count=serving.version.count,
                     caption_count=manifest["caption_count"], dim=serving.version.dim,
                     index_type=serving.version.index_type("image"), faiss_factory=manifest["faiss_factory"],
                     created_at=manifest["created_at"])


@health.get("/healthz", response_model=Status)
async def healthz() -> Status:
    return Status(status="alive")


@health.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def readyz(serving: Serving) -> Status:
    await serving.probe()
    return Status(status="ready", detail=f"index version {serving.version.name}, {serving.version.count} items")


def _response(serving: Engine, modality: str, target: str, hits: list[SearchHit], started: float) -> SearchResponse:
    return SearchResponse(
        query=QueryInfo(modality=modality, target=target), model=serving.model_name,
        index_version=serving.version.name, took_ms=round((time.perf_counter() - started) * 1000, 3),
        results=[SearchResult(id=hit.id, score=hit.score, path=hit.path, url=f"/images/{hit.id}",
                              caption=hit.caption) for hit in hits])
