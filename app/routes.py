"""HTTP routes: validate, call the engine, shape the answer. No FAISS or model details live here."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.engine import Engine, EngineHolder
from app.schemas import (
    MAX_ITEM_ID,
    MAX_K,
    IndexInfo,
    RerankInfo,
    SearchResponse,
    Status,
    Target,
    TextQuery,
    error_responses,
)
from clipspace.errors import IndexNotReady, NotAnImage
from clipspace.index.records import SearchHit
from clipspace.thumbnails import THUMB_MEDIA_TYPE, ThumbnailCache, etag_for

ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")
# Ids are stable per path, but a file can change at a reindex: browsers may reuse a thumbnail for an hour,
# then revalidate it with its ETag (a 304 costs a few hundred bytes).
THUMB_CACHE_CONTROL = "public, max-age=3600"


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency on a worker thread, and two
# such hops per query cost more than the lookups they wrap (docs/decisions.md, "The service as fast as its encoder").
async def holder(request: Request) -> EngineHolder:
    return request.app.state.holder


Holder = Annotated[EngineHolder, Depends(holder)]


async def engine(request: Request) -> Engine:
    """The engine serving right now; a request keeps it to the end even if a new version is published.

    It reads the holder itself rather than depending on `holder`: each nested dependency costs FastAPI's
    solver time on the event loop, on every query.
    """
    serving = request.app.state.holder.engine
    if serving is None:
        raise IndexNotReady(request.app.state.holder.problem or "no index loaded")
    return serving


Serving = Annotated[Engine, Depends(engine)]
ItemId = Annotated[int, PathParam(ge=0, le=MAX_ITEM_ID)]


async def thumbnails(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


Thumbnails = Annotated[ThumbnailCache, Depends(thumbnails)]

search = APIRouter(prefix="/search", tags=["search"])
items = APIRouter(tags=["items"])
health = APIRouter(tags=["health"])


@search.post("/text", response_model=SearchResponse, responses=error_responses(400, 413, 503))
async def search_text(query: TextQuery, serving: Serving) -> JSONResponse:
    return await answer_text_query(query, serving)


async def answer_text_query(query: TextQuery, serving: Engine) -> JSONResponse:
    """The route's whole work, shared with `app.shortcut`, which calls it without the framework's layers."""
    started = time.perf_counter()
    vector = await serving.embed_text(query.text)
    hits = await serving.search(vector, query.k, query.target)
    return _response(serving, "text", query.target, hits, started)


@search.post("/image", response_model=SearchResponse,
             responses=error_responses(400, 413, 415, 503))
async def search_image(holder: Holder, serving: Serving, file: Annotated[UploadFile, File()],
                       k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, target: Target = "image") -> JSONResponse:
    started = time.perf_counter()
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_UPLOAD_TYPES):
        raise NotAnImage(f"the uploaded file is declared as {declared}, not an image")
    vector = await serving.embed_image(await file.read(), holder.settings.max_image_pixels, holder.decoding)
    hits = await serving.search(vector, k, target)
    return _response(serving, "image", target, hits, started)


@items.get("/images/{item_id}", response_class=FileResponse,
           responses={200: {"content": {"image/*": {}}, "description": "the indexed image file"},
                      **error_responses(404, 503)})
async def image_file(item_id: ItemId, serving: Serving) -> FileResponse:
    return FileResponse(serving.image_file(item_id))


@items.get("/thumbs/{item_id}", response_class=Response, responses={
    200: {"content": {THUMB_MEDIA_TYPE: {}}, "description": "the image, at most 256 px on its longest side"},
    304: {"description": "the thumbnail named by If-None-Match is still current"}, **error_responses(404, 503)})
async def thumbnail(item_id: ItemId, request: Request, holder: Holder, serving: Serving,
                    cache: Thumbnails) -> Response:
    """A small preview of an indexed image, made on first request and cached (see docs/decisions.md)."""
    source = serving.image_file(item_id)
    indexed_sha256 = serving.version.item(item_id).sha256
    known = request.headers.get("if-none-match")
    if _etag_matches(known, etag_for(indexed_sha256)):  # answered without reading a byte of the image
        return _not_modified(etag_for(indexed_sha256))
    async with holder.decoding:
        thumb = await run_in_threadpool(cache.get, source, indexed_sha256)
    if _etag_matches(known, thumb.etag):
        return _not_modified(thumb.etag)
    return Response(thumb.data, media_type=THUMB_MEDIA_TYPE,
                    headers={"ETag": thumb.etag, "Cache-Control": THUMB_CACHE_CONTROL})


@items.get("/info", response_model=IndexInfo, responses=error_responses(503))
async def info(serving: Serving) -> IndexInfo:
    manifest = serving.version.manifest
    return IndexInfo(model=manifest.model.model_dump(), index_version=serving.version.name,
                     count=serving.version.count, caption_count=manifest.caption_count, dim=serving.version.dim,
                     index_type=serving.version.index_type("image"), faiss_factory=manifest.faiss_factory,
                     created_at=manifest.created_at, search_params=serving.version.search_params("image"),
                     rerank=RerankInfo(available=serving.rerank_available, detail=serving.rerank_detail))


@health.get("/healthz", response_model=Status)
async def healthz() -> Status:
    return Status(status="alive")


@health.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(holder: Holder, serving: Serving) -> Status:
    await serving.probe()
    detail = f"index version {serving.version.name}, {serving.version.count} items"
    return Status(status="ready", detail=f"{detail}; {holder.problem}" if holder.problem else detail)


@health.get("/metrics", response_class=Response, responses={200: {"content": {metrics.MEDIA_TYPE: {}}}})
async def prometheus_metrics(holder: Holder) -> Response:
    """Prometheus text format: requests, latency per route and per query stage, batches, the index."""
    return Response(metrics.exposition(holder), media_type=metrics.MEDIA_TYPE)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` or a list of tags, compared weakly (a W/ prefix does not matter)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": THUMB_CACHE_CONTROL})


def _response(serving: Engine, modality: str, target: str, hits: list[SearchHit], started: float) -> JSONResponse:
    """A `SearchResponse`, written as JSON here and sent as it is.

    FastAPI would validate a returned model again, field by field, and encode it in a second pass; built from
    the engine's own types, the answer needs neither, and a query saves that time on the event loop. The
    schemathesis run checks every answer against the documented `SearchResponse`.
    """
    answer = {"query": {"modality": modality, "target": target}, "model": serving.model_name,
              "index_version": serving.version.name,
              "took_ms": round((time.perf_counter() - started) * 1000, 3),
              "results": [{"id": hit.id, "score": hit.score, "path": hit.path, "url": f"/images/{hit.id}",
                           "caption": hit.caption} for hit in hits]}
    return JSONResponse(answer)
