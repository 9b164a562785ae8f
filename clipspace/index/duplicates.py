"""Duplicate groups: which items are the same picture (a copy, a resize, a recompression, a crop, a recolour, a
shot a moment later), found from the image vectors at build time and kept in the version's meta.sqlite.

The rule is star-shaped (leader clustering): items are placed in id order; an item joins the group of the
already-placed representative it is most similar to, when that cosine is at least THRESHOLD and their pixels
confirm it (the same colour layout, clipspace.index.layout: a model may put different pictures, the same shapes on
other backgrounds, at cosine 0.999), or when both have the same content hash; otherwise it becomes a
representative itself. The vectors propose, the pixels confirm: only candidate pairs are compared, and an item
without a layout (a version built before layouts) is grouped by its vector alone. Every member is then within
THRESHOLD of its group's representative, so look-alikes cannot chain a group together through intermediaries, as
single-link (connected components of the pairs above threshold) does. Neighbours come from a k-NN search
(`nearest`), not a range search: its memory is bounded whatever the corpus.

A reindex keeps the groups of the items it keeps (same id, same content hash) and places only new or changed
items, and the members of a group whose representative is gone; a group of one is no group.
THRESHOLD and the rule: docs/decisions.md, "Duplicates"; measured by `python -m benchmarks --only duplicates`.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import faiss
import numpy as np

from clipspace.index import layout

THRESHOLD = 0.988  # cosine between a member and its representative: benchmarks/duplicates.py, decisions.md
NEIGHBOURS = 16  # candidates looked at per item; a representative is among them unless a group is this large
EXACT_ROWS = 20_000  # up to this many vectors, the neighbours come from an exact scan
EXACT_QUERIES = 1_000  # and for up to this many items to place, whatever the corpus
IVF_NPROBE = 8
IVF_TRAINING_ROUNDS = 10
QUERY_BATCH = 8192

CREATE_DUPLICATES = ("CREATE TABLE duplicates (id INTEGER PRIMARY KEY, representative INTEGER NOT NULL); "
                     "CREATE INDEX duplicates_by_representative ON duplicates (representative)")

Entry = TypeVar("Entry")


@dataclass(frozen=True)
class DuplicateGroups:
    """The groups of one version: each member's representative, and each group's members (representative first,
    then by id). A version built before groups existed has none."""

    representative_of: dict[int, int]
    members_of: dict[int, tuple[int, ...]]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> DuplicateGroups:
        """From (member id, representative id) pairs, the representative paired with itself."""
        representative_of = dict(pairs)
        grouped: dict[int, list[int]] = {}
        for member, representative in representative_of.items():
            grouped.setdefault(representative, []).append(member)
        members_of = {rep: (rep, *sorted(m for m in members if m != rep)) for rep, members in grouped.items()}
        return cls(representative_of, members_of)

    @functools.cached_property
    def largest_first(self) -> list[tuple[int, ...]]:
        """Every group, largest first, then by representative id: the order GET /duplicates pages through."""
        return sorted(self.members_of.values(), key=lambda members: (-len(members), members[0]))

    def others(self, item_id: int) -> tuple[int, ...]:
        """The other members of `item_id`'s group (none when it is in no group)."""
        members = self.members_of.get(self.representative_of.get(item_id, item_id), ())
        return tuple(member for member in members if member != item_id)


NO_GROUPS = DuplicateGroups({}, {})


def read_groups(read: Callable[[str], list[tuple]]) -> DuplicateGroups:
    """The groups stored in a version's meta.sqlite (through `read`, the version's guarded reader)."""
    return DuplicateGroups.from_pairs(read("SELECT id, representative FROM duplicates"))


def write_groups(db: sqlite3.Connection, representative_of: dict[int, int]) -> None:
    """Store the groups (member -> representative, groups of two or more only) in a staged meta.sqlite."""
    db.executescript(CREATE_DUPLICATES)
    db.executemany("INSERT INTO duplicates (id, representative) VALUES (?, ?)", sorted(representative_of.items()))


def collapse(entries: Sequence[Entry], id_of: Callable[[Entry], int], groups: DuplicateGroups
             ) -> list[tuple[Entry, tuple[int, ...]]]:
    """Ranked entries with every later member of an earlier entry's group removed, each kept entry with the
    other members of its group (the ids it stands for; () when it is in no group). The ranking is kept."""
    kept, seen = [], set()
    for entry in entries:
        item_id = id_of(entry)
        group = groups.representative_of.get(item_id, item_id)
        if group in seen:
            continue
        seen.add(group)
        kept.append((entry, groups.others(item_id)))
    return kept


def group_items(ids: np.ndarray, hashes: Sequence[Hashable], vectors: np.ndarray, *,
                threshold: float = THRESHOLD, previous: DuplicateGroups | None = None,
                kept: np.ndarray | None = None, layouts: Sequence[str | None] | None = None,
                tolerance: float = layout.TOLERANCE) -> dict[int, int]:
    """member id -> representative id for every item in a group of two or more.

    `vectors` are L2-normalised, one row per id; `layouts` (one per row, None where unknown) confirm each pair
    the vectors propose, within `tolerance`. With `previous` (the last version's groups) and `kept` (a
    boolean per row: the item is unchanged since then), kept items keep their place and only the others are
    searched for and placed."""
    ids = np.asarray(ids, dtype=np.int64)
    placed = _kept_places(ids, previous, kept) if previous is not None and kept is not None else {}
    unplaced = np.array(sorted(set(range(len(ids))) - placed.keys(), key=lambda row: ids[row]), dtype=np.int64)
    neighbours, _ = nearest(vectors, unplaced, threshold)
    group_of_hash = {hashes[row]: representative for row, representative in placed.items()}
    confirms = _Layouts(layouts, tolerance) if layouts is not None else None
    for position, row in enumerate(unplaced):
        representative = group_of_hash.get(hashes[row])
        if representative is None:
            representative = _best_representative(int(row), neighbours[position], placed, confirms)
        placed[int(row)] = representative
        group_of_hash.setdefault(hashes[row], representative)
    sizes: dict[int, int] = {}
    for representative in placed.values():
        sizes[representative] = sizes.get(representative, 0) + 1
    return {int(ids[row]): int(ids[rep]) for row, rep in placed.items() if sizes[rep] > 1}


def nearest(vectors: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The NEIGHBOURS nearest rows (by inner product) of each row in `rows`, -1 where none reaches `threshold`.

    An exact scan for a small corpus, or for a few queries (a reindex that adds a few files scans once rather than
    build an IVF over every vector); else an IVF (`_ivf_index`)."""
    if len(rows) == 0:
        return np.zeros((0, NEIGHBOURS), np.int64), np.zeros((0, NEIGHBOURS), np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(NEIGHBOURS, len(vectors))
    if len(vectors) <= EXACT_ROWS or len(rows) <= EXACT_QUERIES:
        def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        search = _ivf_index(vectors).search
    found_rows, found_scores = [], []
    for start in range(0, len(rows), QUERY_BATCH):
        scores, neighbours = search(vectors[rows[start:start + QUERY_BATCH]], k)
        neighbours[scores < threshold] = -1
        found_rows.append(neighbours)
        found_scores.append(scores)
    return np.concatenate(found_rows), np.concatenate(found_scores)


def _ivf_index(vectors: np.ndarray) -> faiss.Index:
    """An inverted-file index probing IVF_NPROBE of 2 sqrt(n) lists: near-duplicates sit far closer to each other
    than to a list's border, so rough lists find them all the same."""
    count, dim = vectors.shape
    lists = int(2 * math.sqrt(count))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = IVF_TRAINING_ROUNDS
    sample = np.random.default_rng(0).choice(count, min(count, lists * 40), replace=False)
    index.train(vectors[np.sort(sample)])
    index.nprobe = IVF_NPROBE
    index.add(vectors)
    return index


def _kept_places(ids: np.ndarray, previous: DuplicateGroups, kept: np.ndarray) -> dict[int, int]:
    """row -> representative row of every kept item whose group survives; a kept item whose representative is
    gone (deleted or changed) is placed again."""
    row_of = {int(item_id): row for row, item_id in enumerate(ids) if kept[row]}
    placed = {}
    for item_id, row in row_of.items():
        representative = row_of.get(previous.representative_of.get(item_id, item_id))
        if representative is not None:
            placed[row] = representative
    return placed


def _best_representative(row: int, neighbours: np.ndarray, placed: dict[int, int],
                         confirms: _Layouts | None) -> int:
    """The most similar placed representative at or above the threshold (neighbours come best first) whose layout
    confirms it, or `row`."""
    for neighbour in neighbours:
        if (neighbour >= 0 and neighbour != row and placed.get(int(neighbour)) == neighbour
                and (confirms is None or confirms(row, int(neighbour)))):
            return int(neighbour)
    return int(row)


class _Layouts:
    """Whether two rows' layouts are the same picture's; each layout decoded once, when first compared."""

    def __init__(self, signatures: Sequence[str | None], tolerance: float) -> None:
        self.signatures = signatures
        self.tolerance = tolerance
        self.decoded: dict[int, np.ndarray] = {}

    def __call__(self, row: int, other: int) -> bool:
        if self.signatures[row] is None or self.signatures[other] is None:
            return True  # unknown: the vectors alone decide
        return layout.distance(self._cells(row), self._cells(other)) <= self.tolerance

    def _cells(self, row: int) -> np.ndarray:
        if row not in self.decoded:
            self.decoded[row] = layout.decode(self.signatures[row])
        return self.decoded[row]
