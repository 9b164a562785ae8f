"""The one way a list of hits becomes the results of an answer, and how long the answer took."""

from __future__ import annotations

import time

from app.serving import Serving
from clipspace.index.records import SearchHit


def result(hit: SearchHit) -> dict:
    """A `SearchResult`, as JSON-ready data."""
    return {"id": hit.id, "score": hit.score, "path": hit.path, "url": f"/images/{hit.id}", "caption": hit.caption}


def search_answer(serving: Serving, query: dict, results: list[dict], started: float) -> dict:
    """A `SearchResponse` (or `ComposedSearchResponse`), as JSON-ready data."""
    return {"query": query, "model": serving.model_name, "index_version": serving.index.version.name,
            "took_ms": took_ms(started), "results": results}


def took_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()`), as every answer reports them."""
    return round((time.perf_counter() - started) * 1000, 3)
