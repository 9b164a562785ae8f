"""Relevance on a ranked list: each result's calibrated probability of a match, then the cuts a query asks for.

The pipeline is find -> fuse -> relevance -> collapse duplicates -> page: the cuts run on the whole list a walk is
cut from, before paging, so every page of a walk sees the same cut and the last page gives no cursor. Relevance
comes from each result's cosine with the query: the list's own score where it is one (mode vector), the stored
vector's cosine where it is not (a fused or keyword-only hit of a hybrid search; min_relevance keeps those the
keyword channel found: they hold the query's words). A keyword-mode query is never
embedded: its results carry no relevance and no cut applies. A version without a calibration (built before there
was one) serves the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from clipspace.index.calibration import Key, RelevanceMap
from clipspace.index.channels import Found
from clipspace.index.version import IndexVersion

DIGITS = 4  # answers show relevance rounded to this; min_relevance compares what they show


@dataclass(frozen=True)
class RelevanceCut:
    """What a query asks to drop: results under `min_relevance`, and (`autocut`) all after the first large drop."""

    min_relevance: float = 0.0
    autocut: bool = False


def judged(version: IndexVersion, found: list[Found], query: np.ndarray | None, *, key: Key, target: str,
           cosines_in_list: bool, cut: RelevanceCut) -> list[Found]:
    """`found` with each result's relevance, cut as `cut` asks. `key` names the calibration map (`map_key`);
    `cosines_in_list` says every score of the list is a cosine with `query` (else they are read from the store)."""
    calibration = version.manifest.calibration
    mapping = calibration.maps.get(key) if calibration is not None else None
    if mapping is None or query is None or not found:
        return found
    return apply_cut(_with_relevance(version, found, query, mapping, target, cosines_in_list), cut, mapping)


def _with_relevance(version: IndexVersion, found: list[Found], query: np.ndarray, mapping: RelevanceMap,
                    target: str, cosines_in_list: bool) -> list[Found]:
    if cosines_in_list:
        cosines = [each.hit.score for each in found]
    else:  # the vector channel's own cosines; the stored vectors only of what the keyword channel alone found
        stored = version.cosines(query, [each.hit.id for each in found if each.cosine is None], target)
        cosines = [each.cosine if each.cosine is not None else stored.get(each.hit.id, -1.0) for each in found]
    relevance = mapping.relevance(np.array(cosines))
    return [replace(each, relevance=float(value)) for each, value in zip(found, relevance, strict=True)]


def apply_cut(found: list[Found], cut: RelevanceCut, mapping: RelevanceMap) -> list[Found]:
    """The results that pass `cut`, in their order. A result the keyword channel found holds every word of the query
    (a file name, a tag): min_relevance never drops it, its relevance only says how much the picture looks it."""
    kept = [each for each in found if each.relevance is None or each.channel != "vector"
            or round(each.relevance, DIGITS) >= cut.min_relevance]
    if not cut.autocut:
        return kept
    return kept[:autocut_length([each.relevance for each in kept], mapping.autocut_drop)]


def autocut_length(relevance: list[float | None], drop: float) -> int:
    """How many results come before the first fall of at least `drop` in log-odds between neighbours (all of
    them without one). The first drop depends only on what is before it, so a deeper walk cuts at the same place."""
    odds = [_log_odds(value) for value in relevance]
    for index in range(len(odds) - 1):
        if odds[index] is not None and odds[index + 1] is not None and odds[index] - odds[index + 1] >= drop:
            return index + 1
    return len(odds)


def _log_odds(value: float | None) -> float | None:
    if value is None:
        return None
    value = min(max(value, 1e-15), 1 - 1e-15)
    return math.log(value / (1 - value))
