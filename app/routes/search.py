"""Search by text or by an uploaded image: `POST /search/text`, `POST /search/image`."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.limits import MAX_JSON_BYTES, BodyLimit
from app.routes.answers import page_answer
from app.routes.deps import Serving
from app.schemas import (
    AUTOCUT_HELP,
    COLLAPSE_DESCRIPTION,
    MAX_K,
    MIN_RELEVANCE_HELP,
    SearchFilterBody,
    SearchResponse,
    Target,
    TextQuery,
    core_filter,
    error_responses,
)
from clipspace.errors import NotAnImage
from clipspace.index.calibration import map_key
from clipspace.index.cursors import MAX_CURSOR_CHARS, query_digest
from clipspace.index.relevance import RelevanceCut, judged
from clipspace.settings import Settings

ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")

router = APIRouter(prefix="/search", tags=["search"])


# It answers a JSONResponse built from the core's own types, sent as it is: FastAPI would validate a returned
# model again, field by field, and encode it in a second pass, on the event loop. The schemathesis run checks
# every answer against the documented `SearchResponse`. `app.shortcut` calls this very function for a JSON
# client, and refuses to start if the route asks for anything it does not give.
@router.post("/text", response_model=SearchResponse, responses=error_responses(400, 410, 413, 422, 503))
async def search_text(query: TextQuery, serving: Serving) -> JSONResponse:
    started = time.perf_counter()
    search_filter = core_filter(query.filter)
    cut = RelevanceCut(query.min_relevance, query.autocut)
    digest = query_digest(["text", query.text, query.target, query.mode, search_filter, cut,
                           query.collapse_duplicates])
    given = serving.index.page_start(query.cursor, digest)
    vector = await serving.encoder.embed_text(query.text) if query.mode != "keyword" else None
    judge = functools.partial(judged, serving.index.version, query=vector, key=map_key("text", query.target),
                              target=query.target, cosines_in_list=query.mode == "vector", cut=cut)
    found, stands_for = await serving.index.find_page(vector, query.text, given + query.k + 1, query.target,
                                                      query.mode, search_filter, query.collapse_duplicates, judge)
    return JSONResponse(page_answer(serving, {"modality": "text", "target": query.target}, found, given, query.k,
                                    digest, started, stands_for))


@router.post("/image", response_model=SearchResponse, responses=error_responses(400, 410, 413, 415, 422, 503))
async def search_image(serving: Serving, file: Annotated[UploadFile, File()],
                       k: Annotated[int, Query(ge=1, le=MAX_K, description="results per page")] = 10,
                       target: Target = "image", search_filter: Annotated[str | None, Form(
                           alias="filter", max_length=MAX_JSON_BYTES,
                           description="a JSON SearchFilterBody, as in the JSON routes")] = None,
                       cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR_CHARS,
                                                           description="the previous page's next_cursor")] = None,
                       min_relevance: Annotated[float, Query(ge=0, le=1, description=MIN_RELEVANCE_HELP)] = 0.0,
                       autocut: Annotated[bool, Query(description=AUTOCUT_HELP)] = False,
                       collapse_duplicates: Annotated[bool, Query(description=COLLAPSE_DESCRIPTION)] = False,
                       ) -> JSONResponse:
    started = time.perf_counter()
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_UPLOAD_TYPES):
        raise NotAnImage(f"the uploaded file is declared as {declared}, not an image")
    data = await file.read()
    chosen = core_filter(_form_filter(search_filter))
    cut = RelevanceCut(min_relevance, autocut)
    digest = query_digest(["image", hashlib.sha256(data).hexdigest(), target, chosen, cut, collapse_duplicates])
    given = serving.index.page_start(cursor, digest)
    vector = await serving.encoder.embed_image(data)
    judge = functools.partial(judged, serving.index.version, query=vector, key=map_key("image", target),
                              target=target, cosines_in_list=True, cut=cut)
    found, stands_for = await serving.index.find_page(vector, None, given + k + 1, target, "vector", chosen,
                                                      collapse_duplicates, judge)
    return JSONResponse(page_answer(serving, {"modality": "image", "target": target}, found, given, k, digest,
                                    started, stands_for))


def _form_filter(text: str | None) -> SearchFilterBody | None:
    """The multipart form's `filter` field: the same JSON object as the JSON routes' (a 422 where it is not)."""
    if text is None or text.strip() in ("", "null"):
        return None
    try:
        return SearchFilterBody.model_validate_json(text)
    except ValidationError as error:
        raise RequestValidationError([{**problem, "loc": ("body", "filter", *problem["loc"])}
                                      for problem in error.errors(include_url=False, include_input=False)]) from None


def body_limits(settings: Settings) -> dict[Callable, BodyLimit]:
    """What `BodyGuard` lets through to each route, keyed by its endpoint (the path comes from the route)."""
    return {search_text: BodyLimit(MAX_JSON_BYTES),
            search_image: BodyLimit(settings.max_upload_bytes, "multipart/form-data",
                                    "send the image as multipart/form-data with a field named 'file'")}
