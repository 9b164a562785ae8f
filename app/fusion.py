"""Fusion routes: composed queries (`POST /search`) and zero-shot labels (`POST /classify`)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import APIRouter

from app.engine import Engine
from app.limits import BodyLimit
from app.routes import Holder, Serving
from app.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ComposedQuery,
    ComposedQueryInfo,
    ComposedSearchResponse,
    LabelProbability,
    RerankedResult,
    SearchResult,
    Term,
    error_responses,
)
from clipspace.errors import ImageTooLarge
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.query import check_dimension, combine, decode_base64_image
from clipspace.index.records import SearchHit

router = APIRouter(tags=["fusion"])

ERRORS = error_responses(400, 404, 413, 415, 422, 503)


@router.post("/search", response_model=ComposedSearchResponse, responses=ERRORS)
async def search_composed(query: ComposedQuery, holder: Holder, serving: Serving) -> ComposedSearchResponse:
    """Weighted terms → one vector (normalised weighted sum) → nearest items; optionally re-ranked.

    "More like this" is one `image_id` term; "this image, but blue, not red" is
    `[{"image_id": 7}, {"text": "blue"}, {"text": "red", "weight": -1}]`.
    """
    started = time.perf_counter()
    texts = serving.rerank_texts(query.terms, query.target) if query.rerank else None
    vectors = await asyncio.gather(*(_term_vector(term, holder, serving) for term in query.terms))
    vector = combine(vectors, [term.weight for term in query.terms])
    if texts is None:
        hits = await serving.search(vector, query.k, query.target)
        results = [_result(hit) for hit in hits]
    else:
        reranked = await serving.rerank(texts, await serving.search(vector, serving.rerank_depth(query.k), "image"))
        results = [RerankedResult(**_result(hit).model_dump(), rerank_score=score) for hit, score in reranked[:query.k]]
    return ComposedSearchResponse(
        query=ComposedQueryInfo(target=query.target, rerank=query.rerank), model=serving.model_name,
        index_version=serving.version.name, took_ms=_since(started), results=results)


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS)
async def classify(request: ClassifyRequest, holder: Holder, serving: Serving) -> ClassifyResponse:
    """Rank labels for an image: prompt templates per label, softmax at the model's own logit scale."""
    started = time.perf_counter()
    zero_shot.check_labels(request.labels, request.template)
    source = Term(image_id=request.image_id) if request.image is None else Term(image=request.image)
    image = await _term_vector(source, holder, serving)
    prompts = [zero_shot.prompts_for(label, request.template, serving.zero_shot_templates) for label in request.labels]
    prompt_vectors = await asyncio.gather(*(serving.embed_text(text) for group in prompts for text in group))
    vectors = zero_shot.label_vectors(np.stack(prompt_vectors), [len(group) for group in prompts])
    ranked = zero_shot.rank_labels(image, request.labels, vectors, serving.logit_scale)
    return ClassifyResponse(labels=[LabelProbability(label=r.label, probability=r.probability) for r in ranked],
                            model=serving.model_name, index_version=serving.version.name, took_ms=_since(started))


async def _term_vector(term: Term, holder: Holder, serving: Engine) -> np.ndarray:
    if term.text is not None:
        return await serving.embed_text(term.text)
    if term.image_id is not None:
        return serving.image_vector(term.image_id)
    if term.vector is not None:
        return check_dimension(term.vector, serving.version.dim)
    data = decode_base64_image(term.image)
    if len(data) > holder.settings.max_upload_bytes:
        raise ImageTooLarge(f"an image term of {len(data):,} bytes exceeds the "
                            f"{holder.settings.max_upload_bytes:,}-byte upload limit")
    return await serving.embed_image(data, holder.settings.max_image_pixels, holder.decoding)


def _result(hit: SearchHit) -> SearchResult:
    return SearchResult(id=hit.id, score=hit.score, path=hit.path, url=f"/images/{hit.id}", caption=hit.caption)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def body_limits(max_upload_bytes: int, max_json_bytes: int) -> dict[str, BodyLimit]:
    """JSON only; room for one upload in base64 (4 bytes per 3) plus the rest of a query."""
    json_only = "send the query as application/json"
    with_image = BodyLimit(4 * -(-max_upload_bytes // 3) + max_json_bytes, "application/json", json_only)
    return {"/search": with_image, "/classify": with_image}
