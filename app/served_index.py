"""The index version being served, as the service reads it: nearest items on the right thread, files by id."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from app import metrics
from clipspace.errors import ItemNotFound
from clipspace.index.channels import Found, Mode, find
from clipspace.index.cursors import MAX_WALK, PagePosition, decode_cursor, encode_cursor
from clipspace.index.duplicates import collapse
from clipspace.index.filters import SearchFilter
from clipspace.index.version import IndexVersion


@dataclass(frozen=True)
class ServedIndex:
    version: IndexVersion
    searching: Executor  # threads that run FAISS searches, each with one OpenMP thread (`search_executor`)

    async def find(self, vector: np.ndarray | None, text: str | None, depth: int, target: str, mode: Mode,
                   search_filter: SearchFilter) -> list[Found]:
        """`depth` results of one query through its channels (clipspace.index.channels). An unfiltered query of a
        small exact index runs right here, on the event loop, any other on a search thread: handing a search to a
        thread and back cost ~0.1 ms a query, more than scanning a few thousand vectors (docs/decisions.md,
        "Where searches run")."""
        with metrics.timed("search"):
            if self.version.quick_to_search(target) and search_filter.is_empty():
                faiss.omp_set_num_threads(1)
                return find(self.version, vector, text, depth, target=target, mode=mode, search_filter=search_filter)
            return await asyncio.get_running_loop().run_in_executor(self.searching, functools.partial(
                find, self.version, vector, text, depth, target=target, mode=mode, search_filter=search_filter))

    async def find_page(self, vector: np.ndarray | None, text: str | None, wanted: int, target: str, mode: Mode,
                        search_filter: SearchFilter, collapse_duplicates: bool,
                        judge: Callable[[list[Found]], list[Found]] = list,
                        ) -> tuple[list[Found], dict[int, tuple[int, ...]] | None]:
        """The first `wanted` results of a query and, when collapsed, the ids each result stands for.

        Collapsing comes after ranking and before paging: a walk counts collapsed results, so `wanted` (the
        results up to the end of the page, plus one to know a next page exists) is reached by searching deeper,
        doubling the depth until it is, or until the index has no more, or MAX_WALK. `judge` (relevance and its
        cuts, clipspace.index.relevance) runs on each ranked list before it is collapsed: a list it shortened has
        lost its tail, and searching deeper would only find more of what it cut."""
        if not collapse_duplicates:
            return judge(await self.find(vector, text, wanted, target, mode, search_filter)), None
        groups, depth = self.version.duplicates, wanted
        while True:
            found = await self.find(vector, text, depth, target, mode, search_filter)
            judged = judge(found)
            kept = collapse(judged, lambda each: each.hit.id, groups)
            if len(kept) >= wanted or len(found) < depth or len(judged) < len(found) or depth >= MAX_WALK:
                return [each for each, _ in kept], {each.hit.id: others for each, others in kept}
            depth = min(MAX_WALK, depth * 2)

    def page_start(self, cursor: str | None, query: str) -> int:
        """How many results the walk of `query` (a `query_digest`) has given: 0 without a cursor."""
        if cursor is None:
            return 0
        return decode_cursor(cursor, self.version.cursor_key, version=self.version.name, query=query)

    def next_cursor(self, query: str, given: int, found: int) -> str | None:
        """The cursor of the page after the first `given` results, when more than that were `found`."""
        if found <= given or given >= MAX_WALK:
            return None
        return encode_cursor(PagePosition(self.version.name, query, given), self.version.cursor_key)

    def image_file(self, item_id: int) -> Path:
        """The file of an indexed item; nothing else (no client path ever reaches the disk)."""
        item = self.version.item(item_id)
        if item is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        root = self.version.corpus_root.resolve()
        path = (root / item.path).resolve()
        if not (path.is_relative_to(root) and path.is_file()):
            raise ItemNotFound(f"the file of image {item_id} is no longer in the image folder")
        return path

    def image_vector(self, item_id: int) -> np.ndarray:
        """The stored vector of an indexed image: "more like this" costs no decoding and no forward pass."""
        vector = self.version.image_vector(item_id)
        if vector is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        return vector


def search_executor() -> ThreadPoolExecutor:
    """Threads for FAISS searches, off the event loop, each searching with one OpenMP thread.

    A single query gains nothing from more OpenMP threads, and idle ones spin on, taking cores from the model.
    FAISS's thread count belongs to the calling thread, so each search thread sets its own as it starts (set
    once on the main thread, it left every search a team of spinning threads: docs/decisions.md, Hardening).
    A plain executor rather than starlette's thread pool: anyio's hop costs more on the event loop, and a
    text query pays it every time (docs/decisions.md, "The service as fast as its encoder").
    """
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="search",
                              initializer=faiss.omp_set_num_threads, initargs=(1,))
