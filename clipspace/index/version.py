"""One index version, opened: verified against its manifest, then searched and read, every read guarded.

A version folder holds manifest.json (clipspace.index.manifest), the vector shards (clipspace.index.shards), for a
model with a matcher its patch-token shards, image.faiss, text.faiss (when captions exist) and meta.sqlite
(clipspace.index.records).
"""

from __future__ import annotations

import functools
import hashlib
import math
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from clipspace.errors import IndexCorrupt
from clipspace.identity import ModelIdentity
from clipspace.index.choose import tuned_search_params
from clipspace.index.cursors import cursor_key
from clipspace.index.duplicates import NO_GROUPS, DuplicateGroups, read_groups
from clipspace.index.facets import Facets, count_facets
from clipspace.index.filtered import search_index, search_selected
from clipspace.index.filters import SearchFilter, register_functions, where
from clipspace.index.keywords import bm25_order, match_expression
from clipspace.index.manifest import Manifest
from clipspace.index.records import ItemRecord, SearchHit, record_from_row, select_list
from clipspace.index.shards import FLOAT16, ShardedVectors

TARGETS = ("image", "text")
QUICK_SEARCH_FLOATS = 1 << 20  # e.g. 2,048 vectors of 512 dims: ~0.1 ms for one query on one core
# A version of at most this many stored floats keeps its records (paths, captions) in memory: where the search
# takes ~0.1 ms, a SQLite lookup of the hits (~0.2 ms on cold caches) would cost more than the search itself.
HELD_RECORDS_FLOATS = QUICK_SEARCH_FLOATS
SELECTIONS_KEPT = 32  # filters whose selected rows a version keeps (a 1M-row selection is 8 MB)


class IndexVersion:
    """One published (or staged) version, verified against its manifest on open, ready to search."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        try:
            self.manifest = self._verified_manifest()
            self.dim: int = self.manifest.dim
            self.count: int = self.manifest.count
            # IO_FLAG_MMAP maps IVF inverted lists from the file instead of copying them into RAM.
            self._faiss = {target: faiss.read_index(str(self.path / f"{target}.faiss"),
                                                    faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
                           for target in TARGETS if (self.path / f"{target}.faiss").exists()}
            self._search_params = {target: self._recorded_search_params(target) for target in self._faiss}
            # One memory-mapped view per target for the version's life: "more like this" and the exact re-rank
            # read rows from it on every query, and must not reopen the shards each time.
            self._vectors = {"image": ShardedVectors(self.path, self.manifest.image_shards, self.dim),
                             "text": ShardedVectors(self.path, self.manifest.caption_shards, self.dim)}
            shape = self.manifest.token_shape
            self._tokens = ShardedVectors(self.path, self.manifest.token_shards, math.prod(shape),
                                          FLOAT16) if shape else None
            _map_every_shard(self._vectors["image"], self._vectors["text"], self._tokens)
            self._db = sqlite3.connect(f"file:{self.path / 'meta.sqlite'}?mode=ro", uri=True,
                                       check_same_thread=False)
            self._db_lock = threading.Lock()
            rows = self._read("SELECT count(*) FROM items")[0][0]
            self._columns = select_list([column for _, column, *_ in self._read("PRAGMA table_info(items)")])
            self.has_keywords = bool(self._read("SELECT 1 FROM sqlite_master WHERE name = 'keywords'"))
            self.has_duplicate_groups = bool(self._read("SELECT 1 FROM sqlite_master WHERE name = 'duplicates'"))
            register_functions(self._db)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, sqlite3.Error) as error:
            raise IndexCorrupt(f"{self.path}: cannot open this index version: {error}") from error
        image = self._faiss.get("image")
        if sum(shard.rows for shard in self.manifest.image_shards) != self.count:
            raise IndexCorrupt(f"{self.path}: the vector shards do not hold the {self.count} rows the manifest "
                               "announces")
        if self._tokens is not None and len(self._tokens) != self.count:
            raise IndexCorrupt(f"{self.path}: the patch-token shards do not hold the {self.count} rows the manifest "
                               "announces")
        if image is None or image.ntotal != self.count or image.d != self.dim or rows != self.count:
            raise IndexCorrupt(f"{self.path}: image.faiss and meta.sqlite do not hold the {self.count} "
                               f"vectors of dim {self.dim} that the manifest announces")
        # A small version's records are read once: a query's SQLite lookup costs ~0.2 ms in the service, where a
        # forward pass has just emptied the CPU caches, and a dict lookup a few microseconds (docs/decisions.md).
        self._held = self._read_records() if self.count * self.dim <= HELD_RECORDS_FLOATS else None
        self._selections: OrderedDict[tuple[SearchFilter, str], np.ndarray] = OrderedDict()

    @property
    def model(self) -> ModelIdentity:
        return self.manifest.model

    @property
    def next_id(self) -> int:
        return self.manifest.next_id

    @property
    def token_shape(self) -> tuple[int, int] | None:
        """The (tokens, width) of the patch tokens this version keeps, or None."""
        return self.manifest.token_shape

    @property
    def corpus_root(self) -> Path:
        return Path(self.manifest.corpus_root)

    def search(self, query: np.ndarray, k: int, target: str = "image", rows: np.ndarray | None = None
               ) -> list[SearchHit]:
        """Top-k items by cosine similarity; `text` searches caption vectors and answers the captioned item.
        With `rows` (from `select`), only those rows are searched, inside the ANN search."""
        index = self._faiss.get(target)
        if index is None or index.ntotal == 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        vectors, params = self._vectors[target], self._search_params[target]
        if rows is None:
            rows, scores = search_index(index, vectors, query, k, params)
        else:
            rows, scores = search_selected(index, vectors, query, k, params, rows)
        found = [(int(row), min(float(score), 1.0)) for row, score in zip(rows, scores, strict=True)]
        records = self._records_by_row([row for row, _ in found], "caption_row" if target == "text" else "row")
        return [SearchHit(records[row].id, score, records[row].path, records[row].caption, records[row])
                for row, score in found if row in records]

    def item(self, item_id: int) -> ItemRecord | None:
        found = self._read(f"SELECT {self._columns} FROM items WHERE id = ?", (item_id,))
        return record_from_row(found[0]) if found else None

    def image_vector(self, item_id: int) -> np.ndarray | None:
        """The stored image vector of one item (as the builder embedded it), or None for an unknown id."""
        found = self._read("SELECT row FROM items WHERE id = ?", (item_id,))
        return np.array(self.image_vectors()[found[0][0]], dtype=np.float32) if found else None

    def cosines(self, query: np.ndarray, item_ids: Sequence[int], target: str = "image") -> dict[int, float]:
        """The cosine of `query` with the stored `target` vector of each item (a fused or keyword score is none)."""
        if not item_ids:
            return {}
        column = "caption_row" if target == "text" else "row"
        found = [(item_id, row) for item_id, row in self._read(
            f"SELECT id, {column} FROM items WHERE id IN ({', '.join('?' * len(item_ids))})", list(item_ids))
            if row is not None]
        vectors = self._vectors[target][[row for _, row in found]] if found else np.zeros((0, self.dim))
        scores = np.asarray(vectors, dtype=np.float32) @ np.asarray(query, dtype=np.float32).reshape(-1)
        return {item_id: min(float(score), 1.0) for (item_id, _), score in zip(found, scores, strict=True)}

    def items(self) -> list[tuple[ItemRecord, int, int | None]]:
        """Every item with its row in vectors.npy and in captions.npy, for reuse by the next build."""
        rows = self._read(f"SELECT {self._columns}, row, caption_row FROM items ORDER BY row")
        return [(record_from_row(row[:-2]), row[-2], row[-1]) for row in rows]

    def image_vectors(self) -> ShardedVectors:
        """Every image vector in row order, memory-mapped from the shards."""
        return self._vectors["image"]

    def caption_vectors(self) -> ShardedVectors:
        return self._vectors["text"]

    def token_rows(self) -> ShardedVectors | None:
        """Every image's patch tokens, flattened, in row order (None when this version keeps none)."""
        return self._tokens

    def patch_tokens(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored patch tokens (tokens, width) float16 of the given items, by id; {} without tokens."""
        if self._tokens is None or not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        found = self._read(f"SELECT id, row FROM items WHERE id IN ({marks})", list(item_ids))
        if not found:
            return {}
        rows = self._tokens[np.array([row for _, row in found])].reshape(len(found), *self.token_shape)
        return {item_id: tokens for (item_id, _), tokens in zip(found, rows, strict=True)}

    def quick_to_search(self, target: str = "image") -> bool:
        """True when a search of `target` is a brute-force scan of at most QUICK_SEARCH_FLOATS numbers, cheap
        enough to run on the caller's thread rather than hand to another one and wait for it."""
        index = self._faiss.get(target)
        return isinstance(index, faiss.IndexFlat) and index.ntotal * index.d <= QUICK_SEARCH_FLOATS

    def index_type(self, target: str = "image") -> str | None:
        return type(self._faiss[target]).__name__ if target in self._faiss else None

    def search_params(self, target: str = "image") -> dict[str, int]:
        """The parameters every query on `target` runs with (see `tuned_search_params`)."""
        return dict(self._search_params.get(target, {}))

    def _recorded_search_params(self, target: str) -> dict[str, int]:
        """The manifest's parameters, applied to the index; a version written before they were recorded gets
        today's tuning."""
        index = self._faiss[target]
        params = self.manifest.search_params.get(target) or tuned_search_params(index)
        space = faiss.ParameterSpace()  # knows where nprobe / efSearch live inside wrapped indexes
        for name, value in params.items():
            if name != "k_factor":
                space.set_index_parameter(index, name, value)
        return params

    def select(self, search_filter: SearchFilter, target: str = "image") -> np.ndarray | None:
        """The rows of `target`'s vectors whose items pass `search_filter`, sorted; None when it filters nothing.

        The last SELECTIONS_KEPT selections are kept: a walk through pages asks for the same one each page."""
        if search_filter.is_empty():
            return None
        key = (search_filter, target)
        if key not in self._selections:
            condition, parameters = where(search_filter)
            column = "caption_row" if target == "text" else "row"
            found = self._read(f"WITH items AS (SELECT {self._columns}, row, caption_row FROM main.items) "
                               f"SELECT {column} FROM items WHERE {column} IS NOT NULL AND {condition} "
                               f"ORDER BY {column}", parameters)
            self._selections[key] = np.array([row for (row,) in found], dtype=np.int64)
            while len(self._selections) > SELECTIONS_KEPT:
                self._selections.popitem(last=False)
        self._selections.move_to_end(key)
        return self._selections[key]

    @functools.cached_property
    def facets(self) -> Facets:
        """Folders, years, cameras and tags with their counts: read once per version."""
        return count_facets(self._read, f"SELECT {self._columns} FROM main.items")

    def keyword_search(self, text: str, k: int, search_filter: SearchFilter | None = None
                       ) -> list[tuple[ItemRecord, float]]:
        """The k items whose words match every word of `text`, best first, with FTS5's bm25 (higher is better)."""
        expression = match_expression(text)
        if not self.has_keywords or expression is None:
            return []
        condition, parameters = where(search_filter or SearchFilter())
        found = self._read(f"WITH items AS (SELECT {self._columns} FROM main.items) "
                           f"SELECT {bm25_order()}, items.* FROM keywords JOIN items ON items.id = keywords.rowid "
                           f"WHERE keywords MATCH ? AND {condition} ORDER BY 1 LIMIT ?",
                           [expression, *parameters, k])
        return [(record_from_row(values), -score) for score, *values in found]

    @functools.cached_property
    def duplicates(self) -> DuplicateGroups:
        """The duplicate groups (clipspace.index.duplicates), read once per version; none in a version built
        before groups existed."""
        return read_groups(self._read) if self.has_duplicate_groups else NO_GROUPS

    def content_hashes(self) -> dict[int, str]:
        """Every item's content hash by id: what the next build compares to keep a group without regrouping."""
        return dict(self._read("SELECT id, sha256 FROM items"))

    def records(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        """The records of the given items, by id (unknown ids are left out)."""
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        found = self._read(f"SELECT {self._columns} FROM items WHERE id IN ({marks})", list(item_ids))
        return {record.id: record for record in map(record_from_row, found)}

    def close(self) -> None:
        self._db.close()

    def _read_records(self) -> dict[str, dict[int, ItemRecord]]:
        """Every record by its row in the image vectors ("row") and in the caption vectors ("caption_row")."""
        found = self._read(f"SELECT row, caption_row, {self._columns} FROM items")
        by_row, by_caption_row = {}, {}
        for row, caption_row, *fields in found:
            by_row[row] = record = record_from_row(fields)
            if caption_row is not None:
                by_caption_row[caption_row] = record
        return {"row": by_row, "caption_row": by_caption_row}

    def _records_by_row(self, rows: list[int], column: str) -> dict[int, ItemRecord]:
        if not rows:
            return {}
        if self._held is not None:
            held = self._held[column]
            return {row: held[row] for row in rows if row in held}
        marks = ",".join("?" * len(rows))
        found = self._read(f"SELECT {column}, {self._columns} FROM items WHERE {column} IN ({marks})", rows)
        return {row[0]: record_from_row(row[1:]) for row in found}

    def _read(self, query: str, parameters: Sequence = ()) -> list[tuple]:
        """Every read of meta.sqlite: one at a time, and a file damaged under a running service is IndexCorrupt
        (a 503 that says what to do), never an sqlite3 error escaping to the caller."""
        with self._db_lock:
            try:
                return self._db.execute(query, parameters).fetchall()
            except sqlite3.Error as error:
                raise IndexCorrupt(f"{self.path}: meta.sqlite cannot be read ({error}); publish a new version "
                                   "with `python -m index_builder`") from error

    def _verified_manifest(self) -> Manifest:
        try:
            text = (self.path / "manifest.json").read_text()
            manifest = Manifest.from_json(text, str(self.path))
            self.cursor_key = cursor_key(text)
        except OSError as error:
            raise IndexCorrupt(f"{self.path}: unreadable manifest.json: {error}") from error
        for name, expected in manifest.checksums.items():
            path = self.path / name
            if not path.exists() or sha256_file(path) != expected:
                raise IndexCorrupt(f"{self.path}: {name} is missing or does not match its checksum")
        return manifest


def _map_every_shard(*stored: ShardedVectors | None) -> None:
    """Map every shard while the version opens, inside its guard: a read of stored vectors (a "more like this"
    term, an exact re-rank, patch tokens) cannot fail later, even when the folder is pruned under the service."""
    for vectors in filter(None, stored):
        for number in range(len(vectors.shards)):
            vectors.shard(number)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
