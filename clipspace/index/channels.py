"""One query through the vector channel, the keyword channel or both: the ranked list a page is cut from.

Hybrid search fuses the two ranked lists by relative score fusion (each list's scores scaled to 0..1, then
weighted): the one fusion within 0.02 of the better channel on every query kind measured (file names, tags,
caption phrases, descriptions no word matches; benchmarks/keywords.py). Reciprocal rank fusion stays beside it as
the measured alternative: it ties a lone exact name or tag hit with the vector channel's first result, and lost
0.26-0.30 MRR on names and tags. A result says which channel found it. Every channel runs inside the filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from clipspace.index.filters import SearchFilter
from clipspace.index.records import SearchHit
from clipspace.index.version import IndexVersion

Mode = Literal["vector", "keyword", "hybrid"]
Channel = Literal["vector", "keyword", "both"]
MODES: tuple[Mode, ...] = ("vector", "keyword", "hybrid")
RRF_K = 60  # the constant of Cormack et al.; ranks beyond ~60 count little either way
# Relative score fusion: the vector list's share of the fused score. Below 0.5, a sole exact keyword hit (a file
# name, a tag) outranks the vector list's first result instead of tying it; 0.3-0.45 meet issue 19's goal
# (python -m benchmarks --only keywords).
VECTOR_WEIGHT = 0.4


@dataclass(frozen=True)
class Found:
    hit: SearchHit  # its score: the cosine (vector), bm25 (keyword) or the fused score (hybrid)
    channel: Channel
    relevance: float | None = None  # set by clipspace.index.relevance: None where the version has no calibration
    # The cosine with the query, where the vector channel found it: relevance then needs no stored vector (reading
    # them back cost 0.25 ms of a hybrid text query's ~0.7 ms of search on a small index).
    cosine: float | None = None


def find(version: IndexVersion, vector: np.ndarray | None, text: str | None, depth: int, *, target: str = "image",
         mode: Mode = "vector", search_filter: SearchFilter | None = None,
         fusion: Callable[[list[SearchHit], list[SearchHit], int], list[Found]] | None = None) -> list[Found]:
    """The best `depth` results of one query, best first. `vector` is needed unless the mode is keyword, `text`
    unless it is vector (an image query has no words: its keyword channel is silent)."""
    search_filter = search_filter or SearchFilter()
    rows = version.select(search_filter, target)
    if rows is not None and len(rows) == 0:
        return []
    seen = version.search(vector, depth, target, rows) if mode != "keyword" else []
    if mode == "vector":
        return [Found(hit, "vector", cosine=hit.score) for hit in seen]
    read = [SearchHit(record.id, score, record.path, record.caption, record)
            for record, score in version.keyword_search(text or "", depth, search_filter)]
    if mode == "keyword" or not seen:
        return [Found(hit, "keyword") for hit in read]
    if not read:  # nothing to fuse: the vector answer as it is, its scores still cosines
        return [Found(hit, "vector", cosine=hit.score) for hit in seen]
    return (fusion or relative_score_fusion)(seen, read, depth)


def reciprocal_rank_fusion(seen: list[SearchHit], read: list[SearchHit], depth: int) -> list[Found]:
    """Each list adds 1 / (RRF_K + rank) to an item's score (ranks from 1): only the order of each list counts."""
    return _fused(seen, read, depth, [1 / (RRF_K + rank) for rank in range(1, len(seen) + 1)],
                  [1 / (RRF_K + rank) for rank in range(1, len(read) + 1)])


def relative_score_fusion(seen: list[SearchHit], read: list[SearchHit], depth: int) -> list[Found]:
    """Each list's scores scaled to 0..1 (its best 1, its worst 0), weighted VECTOR_WEIGHT : 1 - VECTOR_WEIGHT."""
    return _fused(seen, read, depth, [VECTOR_WEIGHT * value for value in _scaled(seen)],
                  [(1 - VECTOR_WEIGHT) * value for value in _scaled(read)])


def _fused(seen: list[SearchHit], read: list[SearchHit], depth: int, seen_scores: list[float],
           read_scores: list[float]) -> list[Found]:
    score: dict[int, float] = {}
    hits: dict[int, SearchHit] = {}
    channels: dict[int, Channel] = {}
    for hits_of, scores_of, channel in ((seen, seen_scores, "vector"), (read, read_scores, "keyword")):
        for hit, value in zip(hits_of, scores_of, strict=True):
            score[hit.id] = score.get(hit.id, 0.0) + value
            hits.setdefault(hit.id, hit)
            channels[hit.id] = "both" if hit.id in channels else channel
    ranked = sorted(score, key=lambda item_id: (-score[item_id], item_id))[:depth]
    cosines = {hit.id: hit.score for hit in seen}
    return [Found(replace(hits[item_id], score=round(score[item_id], 6)), channels[item_id],
                  cosine=cosines.get(item_id)) for item_id in ranked]


def _scaled(hits: list[SearchHit]) -> list[float]:
    if not hits:
        return []
    best, worst = hits[0].score, hits[-1].score
    return [1.0 if best == worst else (hit.score - worst) / (best - worst) for hit in hits]
