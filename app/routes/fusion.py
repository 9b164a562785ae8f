"""Fusion routes: composed queries (`POST /search`) and zero-shot labels (`POST /classify`)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import numpy as np
from fastapi import APIRouter

from app.limits import MAX_JSON_BYTES, BodyLimit
from app.routes.answers import page_answer, result, search_answer, took_ms, with_duplicates
from app.routes.deps import Holder, Serving
from app.schemas import (
    MAX_RERANK_K,
    ClassifyRequest,
    ClassifyResponse,
    ComposedQuery,
    ComposedSearchResponse,
    LabelProbability,
    Term,
    core_filter,
    error_responses,
)
from app.serving import Serving as ServingState
from clipspace.errors import ImageTooLarge
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.query import check_dimension, combine, decode_base64_image
from clipspace.index.calibration import map_key
from clipspace.index.channels import Found
from clipspace.index.cursors import query_digest
from clipspace.index.duplicates import collapse
from clipspace.index.relevance import RelevanceCut, judged
from clipspace.settings import Settings

router = APIRouter(tags=["fusion"])

ERRORS = error_responses(400, 404, 413, 415, 422, 503)


@router.post("/search", response_model=ComposedSearchResponse, responses=ERRORS)
async def search_composed(query: ComposedQuery, holder: Holder, serving: Serving) -> dict:
    """Weighted terms → one vector (normalised weighted sum) → nearest items; optionally re-ranked.

    "More like this" is one `image_id` term; "this image, but blue, not red" is
    `[{"image_id": 7}, {"text": "blue"}, {"text": "red", "weight": -1}]`.
    """
    started = time.perf_counter()
    texts = serving.fusion.rerank_texts(query.terms, query.target) if query.rerank else None
    search_filter = core_filter(query.filter)
    digest = query_digest(["composed", query.model_dump(exclude={"k", "cursor", "filter"}), search_filter])
    given = serving.index.page_start(query.cursor, digest)
    max_upload = holder.settings.max_upload_bytes
    vectors = await asyncio.gather(*(_term_vector(term, serving, max_upload) for term in query.terms))
    vector = combine(vectors, [term.weight for term in query.terms])
    info = {"modality": "composed", "target": query.target, "rerank": query.rerank}
    # A composed query is scored as an image query as soon as one term is not a text.
    key = map_key("text" if all(term.text is not None for term in query.terms) else "image", query.target)
    cut = RelevanceCut(query.min_relevance, query.autocut)
    if texts is None:
        judge = functools.partial(judged, serving.index.version, query=vector, key=key, target=query.target,
                                  cosines_in_list=True, cut=cut)
        found, stands_for = await serving.index.find_page(vector, None, given + query.k + 1, query.target, "vector",
                                                          search_filter, query.collapse_duplicates, judge)
        return page_answer(serving, info, found, given, query.k, digest, started, stands_for)
    # The matcher re-scores the dual encoder's candidates: a page is cut from them, and a walk ends at MAX_RERANK_K.
    depth = min(serving.fusion.rerank_depth(given + query.k + 1), MAX_RERANK_K)
    candidates = [each.hit for each in await serving.index.find(vector, None, depth, "image", "vector",
                                                                search_filter)]
    reranked = await serving.fusion.rerank(texts, candidates, serving.index)
    scores = {hit.id: score for hit, score in reranked}  # relevance still reads each candidate's cosine
    kept = judged(serving.index.version, [Found(hit, "vector") for hit, _ in reranked], vector, key=key,
                  target="image", cosines_in_list=True, cut=cut)
    stands_for = None
    if query.collapse_duplicates:  # after the re-rank: the best-ranked member is the matcher's best
        collapsed = collapse(kept, lambda each: each.hit.id, serving.index.version.duplicates)
        kept, stands_for = [each for each, _ in collapsed], {each.hit.id: others for each, others in collapsed}
    results = [with_duplicates({**result(each.hit, each.channel, each.relevance),
                                "rerank_score": scores[each.hit.id]}, stands_for)
               for each in kept[given:given + query.k]]
    return {**search_answer(serving, info, results, started),
            "next_cursor": serving.index.next_cursor(digest, given + query.k, len(kept))}


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS)
async def classify(request: ClassifyRequest, holder: Holder, serving: Serving) -> ClassifyResponse:
    """Rank labels for an image: prompt templates per label, softmax at the model's own logit scale."""
    started = time.perf_counter()
    source = Term(image_id=request.image_id) if request.image is None else Term(image=request.image)
    image = functools.partial(_term_vector, source, serving, holder.settings.max_upload_bytes)
    ranked = await zero_shot.classify(request.labels, image, serving.encoder.embed_texts,
                                      serving.fusion.logit_scale, request.template, serving.fusion.templates)
    return ClassifyResponse(labels=[LabelProbability(label=r.label, probability=r.probability) for r in ranked],
                            model=serving.model_name, index_version=serving.index.version.name,
                            took_ms=took_ms(started))


async def _term_vector(term: Term, serving: ServingState, max_upload_bytes: int) -> np.ndarray:
    if term.text is not None:
        return await serving.encoder.embed_text(term.text)
    if term.image_id is not None:
        return serving.index.image_vector(term.image_id)
    if term.vector is not None:
        return check_dimension(term.vector, serving.index.version.dim)
    data = decode_base64_image(term.image)
    if len(data) > max_upload_bytes:
        raise ImageTooLarge(f"an image term of {len(data):,} bytes exceeds the {max_upload_bytes:,}-byte upload limit")
    return await serving.encoder.embed_image(data)


def body_limits(settings: Settings) -> dict[Callable, BodyLimit]:
    """JSON only; room for one upload in base64 (4 bytes per 3) plus the rest of a query."""
    json_only = "send the query as application/json"
    with_image = BodyLimit(4 * -(-settings.max_upload_bytes // 3) + MAX_JSON_BYTES, "application/json", json_only)
    return {search_composed: with_image, classify: with_image}
