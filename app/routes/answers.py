"""The one way a list of hits becomes the results of an answer, and how long the answer took."""

from __future__ import annotations

import time

from app.schemas import OCR_SHOWN_CHARS
from app.serving import Serving
from clipspace.index.channels import Channel, Found
from clipspace.index.records import UNKNOWN_FACTS, SearchHit
from clipspace.index.relevance import DIGITS as relevance_digits


def result(hit: SearchHit, channel: Channel = "vector", relevance: float | None = None) -> dict:
    """A `SearchResult`, as JSON-ready data: with what the index knows of the photo, where it knows it."""
    facts = hit.record.facts if hit.record is not None else UNKNOWN_FACTS
    text = hit.record.ocr_text if hit.record is not None else None
    return {"id": hit.id, "score": hit.score, "path": hit.path, "url": f"/images/{hit.id}", "caption": hit.caption,
            "taken_at": facts.taken_at, "taken_at_source": facts.taken_at_source, "camera": facts.camera,
            "lat": facts.lat, "lon": facts.lon, "tags": list(facts.tags), "channel": channel,
            "ocr_text": text[:OCR_SHOWN_CHARS] if text else None,
            "relevance": None if relevance is None else round(relevance, relevance_digits), "duplicates": None}


def page_answer(serving: Serving, query: dict, found: list[Found], given: int, k: int, digest: str,
                started: float, stands_for: dict[int, tuple[int, ...]] | None = None) -> dict:
    """The `k` results after the first `given` of `found` (already cut by relevance), with the cursor of the next
    page; with `stands_for` (a collapsed search), each result lists the duplicates it stands for."""
    results = [with_duplicates(result(each.hit, each.channel, each.relevance), stands_for)
               for each in found[given:given + k]]
    return {**search_answer(serving, query, results, started),
            "next_cursor": serving.index.next_cursor(digest, given + k, len(found))}


def with_duplicates(answer: dict, stands_for: dict[int, tuple[int, ...]] | None) -> dict:
    """A result of a collapsed search lists the duplicates it stands for; any other says null."""
    if stands_for is not None:
        answer["duplicates"] = list(stands_for.get(answer["id"], ()))
    return answer


def search_answer(serving: Serving, query: dict, results: list[dict], started: float) -> dict:
    """A `SearchResponse` (or `ComposedSearchResponse`), as JSON-ready data."""
    return {"query": query, "model": serving.model_name, "index_version": serving.index.version.name,
            "took_ms": took_ms(started), "results": results}


def took_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()`), as every answer reports them."""
    return round((time.perf_counter() - started) * 1000, 3)
