"""HTTP routes: validate, call the engine, shape the answer. No FAISS or model details live here."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

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
MAX_ITEM_ID = 2**63 - 1  # SQLite's integer range


def holder(request: Request) -> EngineHolder:
    return request.app.state.holder


Holder = Annotated[EngineHolder, Depends(holder)]


def engine(holder: Holder) -> Engine:
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
async def search_image(holder: Holder, serving: Serving, file: Annotated[UploadFile, File()],
                       k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, target: Target = "image") -> SearchResponse:
    started = time.perf_counter()
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_UPLOAD_TYPES):
        raise NotAnImage(f"the uploaded file is declared as {declared}, not an image")
    vector = await serving.embed_image(await file.read(), holder.settings.max_image_pixels, holder.decoding)
    hits = await serving.search(vector, k, target)
    return _response(serving, "image", target, hits, started)


@items.get("/images/{item_id}", response_class=FileResponse, responses={404: {"model": Status}})
async def image_file(item_id: Annotated[int, PathParam(ge=0, le=MAX_ITEM_ID)], serving: Serving) -> FileResponse:
    return FileResponse(serving.image_file(item_id))


@items.get("/info", response_model=IndexInfo)
async def info(serving: Serving) -> IndexInfo:
    manifest = serving.version.manifest
    return IndexInfo(model=manifest["model"], index_version=serving.version.name, count=serving.version.count,
                     caption_count=manifest["caption_count"], dim=serving.version.dim,
                     index_type=serving.version.index_type("image"), faiss_factory=manifest["faiss_factory"],
                     created_at=manifest["created_at"], search_params=serving.version.search_params("image"))


@health.get("/healthz", response_model=Status)
async def healthz() -> Status:
    return Status(status="alive")


@health.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def readyz(holder: Holder, serving: Serving) -> Status:
    await serving.probe()
    detail = f"index version {serving.version.name}, {serving.version.count} items"
    return Status(status="ready", detail=f"{detail}; {holder.problem}" if holder.problem else detail)


def _response(serving: Engine, modality: str, target: str, hits: list[SearchHit], started: float) -> SearchResponse:
    return SearchResponse(
        query=QueryInfo(modality=modality, target=target), model=serving.model_name,
        index_version=serving.version.name, took_ms=round((time.perf_counter() - started) * 1000, 3),
        results=[SearchResult(id=hit.id, score=hit.score, path=hit.path, url=f"/images/{hit.id}",
                              caption=hit.caption) for hit in hits])
