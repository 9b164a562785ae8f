"""The indexed items and the index itself: `GET /images/{id}`, `GET /thumbs/{id}`, `GET /info`, `GET /facets`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from app.routes.deps import Serving, Thumbnails
from app.schemas import MAX_ITEM_ID, FacetCount, FacetsResponse, IndexInfo, RerankInfo, RuntimeInfo, error_responses
from clipspace.thumbnails import THUMB_MEDIA_TYPE, etag_for

# Ids are stable per path, but a file can change at a reindex: browsers may reuse a thumbnail for an hour,
# then revalidate it with its ETag (a 304 costs a few hundred bytes).
THUMB_CACHE_CONTROL = "public, max-age=3600"

ItemId = Annotated[int, PathParam(ge=0, le=MAX_ITEM_ID)]

router = APIRouter(tags=["items"])


@router.get("/images/{item_id}", response_class=FileResponse,
            responses={200: {"content": {"image/*": {}}, "description": "the indexed image file"},
                       **error_responses(404, 503)})
async def image_file(item_id: ItemId, serving: Serving) -> FileResponse:
    return FileResponse(serving.index.image_file(item_id))


@router.get("/thumbs/{item_id}", response_class=Response, responses={
    200: {"content": {THUMB_MEDIA_TYPE: {}}, "description": "the image, at most 256 px on its longest side"},
    304: {"description": "the thumbnail named by If-None-Match is still current"}, **error_responses(404, 503)})
async def thumbnail(item_id: ItemId, request: Request, serving: Serving, cache: Thumbnails) -> Response:
    """A small preview of an indexed image, made on first request and cached (see docs/decisions.md)."""
    source = serving.index.image_file(item_id)
    indexed_sha256 = serving.index.version.item(item_id).sha256
    known = request.headers.get("if-none-match")
    if _etag_matches(known, etag_for(indexed_sha256)):  # answered without reading a byte of the image
        return _not_modified(etag_for(indexed_sha256))
    async with serving.encoder.decoding:
        thumb = await run_in_threadpool(cache.get, source, indexed_sha256)
    if _etag_matches(known, thumb.etag):
        return _not_modified(thumb.etag)
    return Response(thumb.data, media_type=THUMB_MEDIA_TYPE,
                    headers={"ETag": thumb.etag, "Cache-Control": THUMB_CACHE_CONTROL})


@router.get("/info", response_model=IndexInfo, responses=error_responses(503))
async def info(serving: Serving) -> IndexInfo:
    version = serving.index.version
    manifest = version.manifest
    return IndexInfo(model=manifest.model.model_dump(), index_version=version.name,
                     count=version.count, caption_count=manifest.caption_count, dim=version.dim,
                     index_type=version.index_type("image"), faiss_factory=manifest.faiss_factory,
                     created_at=manifest.created_at, search_params=version.search_params("image"),
                     relevance=manifest.calibration.model_dump()["maps"] if manifest.calibration else None,
                     rerank=RerankInfo(available=serving.fusion.rerank_available,
                                       detail=serving.fusion.rerank_detail),
                     runtime=RuntimeInfo(name=serving.encoder.runtime.name, detail=serving.encoder.runtime.detail))


@router.get("/facets", response_model=FacetsResponse, responses=error_responses(503))
async def facets(serving: Serving) -> FacetsResponse:
    """What the index holds, counted, for filter controls: folders (each with what lies below it), capture years,
    cameras and tags, the most frequent first (at most 200 of each)."""
    version = serving.index.version
    counted = await run_in_threadpool(lambda: version.facets)  # SQL over every record, once per version
    return FacetsResponse(index_version=version.name, **{
        name: [FacetCount(value=value, count=count) for value, count in getattr(counted, name)]
        for name in ("folders", "years", "cameras", "tags")})


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` or a list of tags, compared weakly (a W/ prefix does not matter)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": THUMB_CACHE_CONTROL})
