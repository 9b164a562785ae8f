"""Facets: what a version's items hold, counted, for a page's filter controls (folders, years, cameras, tags)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clipspace.photos import PhotoFacts

MAX_VALUES = 200  # per facet, the most frequent first

Read = Callable[[str], list[tuple]]


@dataclass(frozen=True)
class Facets:
    folders: list[tuple[str, int]]  # every folder with the number of items in it and below it
    years: list[tuple[str, int]]  # of the capture time, newest first
    cameras: list[tuple[str, int]]
    tags: list[tuple[str, int]]  # counted case-insensitively, shown as first written


def count_facets(read: Read, records: str) -> Facets:
    """The facets of `records` (a SELECT of the items' columns, as the version reads them), through `read`."""
    source = f"(SELECT * FROM ({records}))"
    folders: Counter[str] = Counter()
    for folder, count in read(f"SELECT rtrim(path, replace(path, '/', '')), count(*) FROM {source} GROUP BY 1"):
        parts = folder.rstrip("/").split("/") if folder else []
        for depth in range(1, len(parts) + 1):
            folders["/".join(parts[:depth])] += count
    years = read(f"SELECT substr(taken_at, 1, 4), count(*) FROM {source} WHERE taken_at IS NOT NULL "
                 "GROUP BY 1 ORDER BY 1 DESC")
    cameras: Counter[str] = Counter()
    for make, model, count in read(f"SELECT camera_make, camera_model, count(*) FROM {source} "
                                   "WHERE coalesce(camera_make, camera_model) IS NOT NULL GROUP BY 1, 2"):
        cameras[PhotoFacts(None, None, None, make, model).camera] += count
    tags = read(f"SELECT min(tag.value), count(*) FROM {source} AS items, json_each(items.tags) AS tag "
                "GROUP BY fold(tag.value) ORDER BY 2 DESC, 1")
    return Facets(folders=_top(folders.items()), years=[tuple(row) for row in years[:MAX_VALUES]],
                  cameras=_top(cameras.items()), tags=[tuple(row) for row in tags[:MAX_VALUES]])


def _top(counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(counts, key=lambda pair: (-pair[1], pair[0]))[:MAX_VALUES]
