"""Search by text or by an uploaded image: `POST /search/text`, `POST /search/image`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse

from app.limits import MAX_JSON_BYTES, BodyLimit
from app.routes.answers import result, search_answer
from app.routes.deps import Serving
from app.schemas import MAX_K, SearchResponse, Target, TextQuery, error_responses
from clipspace.errors import NotAnImage
from clipspace.settings import Settings

ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")

router = APIRouter(prefix="/search", tags=["search"])


# It answers a JSONResponse built from the core's own types, sent as it is: FastAPI would validate a returned
# model again, field by field, and encode it in a second pass, on the event loop. The schemathesis run checks
# every answer against the documented `SearchResponse`. `app.shortcut` calls this very function for a JSON
# client, and refuses to start if the route asks for anything it does not give.
@router.post("/text", response_model=SearchResponse, responses=error_responses(400, 413, 503))
async def search_text(query: TextQuery, serving: Serving) -> JSONResponse:
    started = time.perf_counter()
    vector = await serving.encoder.embed_text(query.text)
    hits = await serving.index.search(vector, query.k, query.target)
    return JSONResponse(search_answer(serving, {"modality": "text", "target": query.target},
                                      [result(hit) for hit in hits], started))


@router.post("/image", response_model=SearchResponse, responses=error_responses(400, 413, 415, 503))
async def search_image(serving: Serving, file: Annotated[UploadFile, File()],
                       k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, target: Target = "image") -> JSONResponse:
    started = time.perf_counter()
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_UPLOAD_TYPES):
        raise NotAnImage(f"the uploaded file is declared as {declared}, not an image")
    vector = await serving.encoder.embed_image(await file.read())
    hits = await serving.index.search(vector, k, target)
    return JSONResponse(search_answer(serving, {"modality": "image", "target": target},
                                      [result(hit) for hit in hits], started))


def body_limits(settings: Settings) -> dict[Callable, BodyLimit]:
    """What `BodyGuard` lets through to each route, keyed by its endpoint (the path comes from the route)."""
    return {search_text: BodyLimit(MAX_JSON_BYTES),
            search_image: BodyLimit(settings.max_upload_bytes, "multipart/form-data",
                                    "send the image as multipart/form-data with a field named 'file'")}
