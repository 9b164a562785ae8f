"""Index versions on disk: write one beside the old, publish it atomically, open it, search it.

INDEX_DIR/current holds the name of the serving version; versions/NNNN/ holds manifest.json (clipspace.manifest),
the vector shards (clipspace.shards), for a model with a matcher its patch-token shards, image.faiss, text.faiss
(when captions exist) and meta.sqlite. A version is written under a staging name, verified, renamed into place, and
only then named in `current` (an atomic rename), so a crash at any moment leaves the previous version serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clipspace import __version__
from clipspace.errors import IndexBusy, IndexCorrupt, IndexNotReady, IndexWriteFailed, InvalidBuildOptions
from clipspace.identity import ModelIdentity
from clipspace.manifest import Manifest, Shard
from clipspace.shards import FLOAT16, SHARD_ROWS, ShardedVectors, ShardWriter

log = logging.getLogger(__name__)

CURRENT = "current"
VERSIONS = "versions"
STAGING_PREFIX = ".staging-"
TARGETS = ("image", "text")
# Both limits count stored floats, given as vectors of LIMIT_DIM dims: exact search reads every float per query
# (memory-bound: ~4 ms at 50k x 512-d here), and HNSW holds every float in RAM (docs/decisions.md).
EXACT_SEARCH_LIMIT = 50_000  # 50k at 512-d, 200k at 128-d
HNSW_LIMIT = 200_000  # beyond, IVF-PQ: HNSW would hold every vector in RAM (400 MB at 200k x 512-d)
LIMIT_DIM = 512
HNSW_EF_SEARCH = 128  # recall@10 0.999 on 100k clustered vectors, 0.32 ms (FAISS's default 16: 0.93)
IVF_PROBE_DIVISOR = 32  # nprobe = nlist / 32: 64 at 1M, recall@10 0.990 at 1.4 ms of CPU (docs/decisions.md)
RERANK_K_FACTOR = 20  # a compressed index proposes 20 x k candidates; their exact cosines pick the k answers
QUICK_SEARCH_FLOATS = 1 << 20  # e.g. 2,048 vectors of 512 dims: ~0.1 ms for one query on one core
# A version of at most this many stored floats keeps its records (paths, captions) in memory: where the search
# takes ~0.1 ms, a SQLite lookup of the hits (~0.2 ms on cold caches) would cost more than the search itself.
HELD_RECORDS_FLOATS = QUICK_SEARCH_FLOATS
# Indexes whose scores are already exact inner products; any other (PQ, SQ, PCA...) is re-ranked.
EXACT_INDEXES = (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat, faiss.IndexRefine)
TRAIN_SAMPLE = 100_000  # k-means and PQ train on at most this many rows (seeded sample): minutes, not hours, at 1M


@dataclass(frozen=True)
class ItemRecord:
    """One indexed image, as meta.sqlite stores it. `id` is stable for a path across reindexes."""

    id: int
    path: str
    sha256: str
    bytes: int
    mtime_ns: int
    width: int
    height: int
    caption: str | None


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float
    path: str
    caption: str | None


def choose_factory(index_type: str, count: int, dim: int) -> str:
    """`auto` picks by corpus size (thresholds measured on clustered embeddings, docs/decisions.md); anything else
    is a FAISS factory string used as given.

    Exact search below EXACT_SEARCH_LIMIT vectors of LIMIT_DIM dims (as many floats in any dim); HNSW up to
    HNSW_LIMIT such vectors; beyond, IVF with 4-bit fast-scan PQ codes
    (dim / 8 bytes per vector), whose candidates are re-ranked exactly from the stored vectors.
    """
    if index_type != "auto":
        return index_type
    if count * dim < EXACT_SEARCH_LIMIT * LIMIT_DIM:
        return "Flat"
    if count * dim < HNSW_LIMIT * LIMIT_DIM:
        return "HNSW32,Flat"
    nlist = 2 ** round(math.log2(2 * math.sqrt(count)))  # ~2 sqrt(N) lists: 2048 at 1M
    sub_vectors = dim // 4 if dim % 4 == 0 else dim  # 4 dimensions per 4-bit sub-quantizer
    return f"IVF{nlist},PQ{sub_vectors}x4fs"


def check_factory(index_type: str, dim: int) -> None:
    """Refuse an unknown FAISS factory string before a build spends an hour embedding."""
    if index_type == "auto":
        return
    try:
        faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise InvalidBuildOptions(f"FAISS cannot build index type {index_type!r}: {_first_line(error)}") from error


def build_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product FAISS index over L2-normalised vectors, so scores are cosine similarities."""
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained and len(vectors):
            sample = _training_sample(vectors)
            log.info("training FAISS %s on %d of %d vectors", factory, len(sample), len(vectors))
            index.train(sample)
    except RuntimeError as error:  # e.g. IVF with fewer vectors than lists
        raise InvalidBuildOptions(f"FAISS index {factory!r} over {len(vectors)} vectors: "
                                  f"{_first_line(error)}") from error
    if len(vectors):
        index.add(vectors)
    return index


def tuned_search_params(index: faiss.Index) -> dict[str, int]:
    """How to search `index`, by FAISS's own parameter names plus `k_factor` (candidates per answer re-ranked
    exactly from the stored vectors); recorded in the manifest at build time and applied to every query."""
    params = {}
    if isinstance(index, faiss.IndexHNSW):
        params["efSearch"] = HNSW_EF_SEARCH
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params["nprobe"] = max(1, ivf.nlist // IVF_PROBE_DIVISOR)
    if not isinstance(index, EXACT_INDEXES):
        params["k_factor"] = RERANK_K_FACTOR
    return params


def write_version(index_dir: Path, items: Sequence[ItemRecord], image_vectors: np.ndarray,
                  caption_vectors: np.ndarray, *, model: ModelIdentity, factory: str, corpus_root: Path,
                  report: dict[str, Any], next_id: int | None = None) -> Path:
    """Write a complete version from arrays in memory into a staging folder; `publish_version` makes it current.

    Rows of `image_vectors` follow `items`; rows of `caption_vectors` follow the items that have a caption.
    The builder streams through `VersionWriter` instead, so that it never holds a corpus of vectors.
    """
    writer = VersionWriter(index_dir, int(np.shape(image_vectors)[1]))
    captions = iter(caption_vectors)
    try:
        for item, vector in zip(items, image_vectors, strict=True):
            writer.add(item, vector, next(captions) if item.caption is not None else None)
        return writer.finish(model=model, factory=factory, corpus_root=corpus_root, report=report,
                             next_id=next_id or 0)
    except BaseException:
        writer.abandon()
        raise


def write_faiss(folder: Path, target: str, shards: Sequence[Shard], dim: int, factory: str) -> dict[str, int]:
    """Build `target`.faiss over the shards of a staged version and answer its tuned search parameters
    (a plain function: Ray runs it off the driver)."""
    vectors = np.ascontiguousarray(ShardedVectors(folder, shards, dim), dtype=np.float32)
    index = build_faiss(vectors, factory)
    try:
        faiss.write_index(index, str(Path(folder) / f"{target}.faiss"))
    except RuntimeError as error:  # FAISS reports a failed write (e.g. a full disk) as a RuntimeError
        raise IndexWriteFailed(f"cannot write {target}.faiss: {_first_line(error)}") from error
    return tuned_search_params(index)


class VersionWriter:
    """Streams one new version into a staging folder: item records to meta.sqlite, vectors to shards.

    Items arrive in row order, each with its image vector and, when it has a caption, its caption vector. A vector
    is either a fresh array or the row (an int) of the same vector in `previous`, which is then linked or copied
    without being embedded again. Memory holds one batch of records and one chunk of vectors, whatever the corpus.
    With `token_shape`, every image also brings its patch tokens (or, when its vector is a previous row, the
    previous version's tokens of that row are kept): `previous` must then hold tokens of that shape.
    """

    RECORDS_PER_INSERT = 4096

    def __init__(self, index_dir: Path, dim: int, previous: IndexVersion | None = None,
                 shard_rows: int = SHARD_ROWS, token_shape: tuple[int, int] | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.dim = dim
        self.previous = previous
        self.token_shape = tuple(token_shape) if token_shape else None
        if self.token_shape and previous is not None and previous.token_shape != self.token_shape:
            raise ValueError(f"the previous version holds patch tokens {previous.token_shape}, not {self.token_shape}")
        self.staging = self.index_dir / VERSIONS / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        with writing(self.index_dir):
            self.staging.mkdir(parents=True)
        stamp = f"{time.time_ns():x}"
        self.images = ShardWriter(self.staging, f"image-{stamp}", dim,
                                  previous.image_vectors() if previous else None, shard_rows)
        self.captions = ShardWriter(self.staging, f"caption-{stamp}", dim,
                                    previous.caption_vectors() if previous else None, shard_rows)
        self.tokens = ShardWriter(self.staging, f"tokens-{stamp}", math.prod(self.token_shape),
                                  previous.token_rows() if previous else None, shard_rows,
                                  FLOAT16) if self.token_shape else None
        with writing(self.index_dir):
            self._db = sqlite3.connect(self.staging / "meta.sqlite")
            self._db.execute(_CREATE_ITEMS)
        self._pending: list[tuple] = []
        self.count = 0
        self.caption_count = 0
        self.next_id = 0

    def add(self, item: ItemRecord, image: np.ndarray | int, caption: np.ndarray | int | None = None,
            tokens: np.ndarray | None = None) -> None:
        """Append one item; `image` / `caption` are a vector, or the row of that vector in the previous version;
        `tokens` are the fresh image's patch tokens when the version keeps them."""
        with writing(self.index_dir):
            self._add(item, image, caption, tokens)

    def _add(self, item: ItemRecord, image: np.ndarray | int, caption: np.ndarray | int | None,
             tokens: np.ndarray | None) -> None:
        if self.tokens is not None:  # a previous row keeps that row's tokens; a fresh vector brings its own
            fresh = not isinstance(image, int | np.integer)
            if fresh and tokens is None:
                raise ValueError(f"{item.path} has a fresh vector but no patch tokens")
            _add_vector(self.tokens, tokens.reshape(-1) if fresh else image)
        caption_row = None
        if item.caption is not None:
            if caption is None:
                raise ValueError(f"{item.path} has a caption but no caption vector")
            _add_vector(self.captions, caption)
            caption_row, self.caption_count = self.caption_count, self.caption_count + 1
        _add_vector(self.images, image)
        self._pending.append((*vars(item).values(), self.count, caption_row))  # astuple deep-copies: slow
        self.count += 1
        self.next_id = max(self.next_id, item.id + 1)
        if len(self._pending) >= self.RECORDS_PER_INSERT:
            self._flush()

    def finish(self, *, model: ModelIdentity, factory: str, corpus_root: Path, report: dict[str, Any],
               next_id: int = 0, build: Callable[..., dict[str, int]] = write_faiss) -> Path:
        """Close the shards, build the FAISS indexes (with `build`), write the manifest, fsync and verify."""
        with writing(self.index_dir):
            return self._finish(model, factory, corpus_root, report, next_id, build)

    def _finish(self, model: ModelIdentity, factory: str, corpus_root: Path, report: dict[str, Any], next_id: int,
                build: Callable[..., dict[str, int]]) -> Path:
        self._flush()
        self._db.commit()
        self._db.close()
        image_shards, caption_shards = tuple(self.images.close()), tuple(self.captions.close())
        token_shards = tuple(self.tokens.close()) if self.tokens else ()
        linked = self._link_unchanged_indexes(image_shards, caption_shards, factory)
        search_params = {target: params for target, params in self.previous.manifest.search_params.items()
                         if f"{target}.faiss" in linked} if self.previous else {}
        if "image.faiss" not in linked:
            search_params["image"] = build(self.staging, "image", image_shards, self.dim, factory)
        if caption_shards and "text.faiss" not in linked:
            search_params["text"] = build(self.staging, "text", caption_shards, self.dim,
                                          choose_factory("auto", self.caption_count, self.dim))
        reused = {shard.file for writer in (self.images, self.captions, self.tokens) if writer
                  for shard in writer.linked} | linked
        known = self.previous.manifest.checksums if self.previous else {}
        manifest = Manifest(
            model=model, dim=self.dim, count=self.count, caption_count=self.caption_count,
            next_id=max(next_id, self.next_id), faiss_factory=factory, search_params=search_params,
            corpus_root=str(Path(corpus_root).resolve()),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), builder_version=__version__,
            build_report=report, image_shards=image_shards, caption_shards=caption_shards,
            token_shape=self.token_shape, token_shards=token_shards,
            checksums={path.name: known[path.name] if path.name in reused else _sha256_file(path)
                       for path in sorted(self.staging.iterdir())})
        (self.staging / "manifest.json").write_text(manifest.to_json())
        _fsync_tree(self.staging)
        IndexVersion(self.staging).close()  # re-read everything against the manifest before anyone can serve it
        return self.staging

    def abandon(self) -> None:
        """Drop the staging folder (a failed build must not leave gigabytes behind on a full disk)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            for writer in (self.images, self.captions, self.tokens):
                if writer:
                    writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _flush(self) -> None:
        self._db.executemany(f"INSERT INTO items ({_COLUMNS}, row, caption_row) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             self._pending)
        self._pending.clear()

    def _link_unchanged_indexes(self, image_shards: tuple[Shard, ...], caption_shards: tuple[Shard, ...],
                                factory: str) -> set[str]:
        """FAISS files over exactly the previous version's shards are the previous files: link, don't rebuild."""
        if self.previous is None:
            return set()
        before, linked = self.previous.manifest, set()
        if image_shards == before.image_shards and factory == before.faiss_factory:
            linked.add("image.faiss")
        if caption_shards and caption_shards == before.caption_shards:
            linked.add("text.faiss")
        for name in linked:
            os.link(self.previous.path / name, self.staging / name)
        return linked


@contextlib.contextmanager
def writing(index_dir: Path) -> Iterator[None]:
    """Turn a failed write (a full disk, a read-only folder) into one error that says nothing was published."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        reason = f"{error.strerror} ({error.filename})" if isinstance(error, OSError) and error.strerror else error
        raise IndexWriteFailed(f"cannot write a new version of the index at {index_dir}: {reason}") from error


def _add_vector(writer: ShardWriter, vector: np.ndarray | int) -> None:
    if isinstance(vector, int | np.integer):
        writer.add_previous(int(vector))
    else:
        writer.add(vector)


def publish_version(index_dir: Path, staging: Path, keep: int = 3) -> str:
    """Rename a verified staging folder to the next version number and point `current` at it atomically."""
    versions = Path(index_dir) / VERSIONS
    name = f"{max(_numbered_versions(versions), default=0) + 1:04d}"
    with writing(index_dir):
        os.replace(staging, versions / name)
        pointer = Path(index_dir) / f".{CURRENT}.tmp"
        pointer.write_text(name + "\n")
        _fsync_file(pointer)
        os.replace(pointer, Path(index_dir) / CURRENT)
        _fsync_dir(Path(index_dir))
    _prune(versions, keep)
    return name


def current_version_name(index_dir: Path) -> str | None:
    try:
        return (Path(index_dir) / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def open_current(index_dir: Path) -> IndexVersion:
    """Open the serving version, or raise IndexNotReady / IndexCorrupt with a message a person can act on."""
    name = current_version_name(index_dir)
    if name is None:
        raise IndexNotReady(f"no index at {index_dir}: build one with `python -m index_builder`")
    return IndexVersion(Path(index_dir) / VERSIONS / name)


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's build lock; also clears staging folders that a crashed build left behind."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(index_dir) / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise IndexBusy(f"another build is running on {index_dir}") from error
        for stale in (Path(index_dir) / VERSIONS).glob(STAGING_PREFIX + "*"):
            log.info("removing %s, left by an interrupted build", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
        yield


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
            self._reranked = {target for target, params in self._search_params.items() if "k_factor" in params}
            self._db = sqlite3.connect(f"file:{self.path / 'meta.sqlite'}?mode=ro", uri=True,
                                       check_same_thread=False)
            rows = self._db.execute("SELECT count(*) FROM items").fetchone()[0]
        except (OSError, KeyError, TypeError, RuntimeError, sqlite3.Error) as error:
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
        self._db_lock = threading.Lock()
        # A small version's records are read once: a query's SQLite lookup costs ~0.2 ms in the service, where a
        # forward pass has just emptied the CPU caches, and a dict lookup a few microseconds (docs/decisions.md).
        self._held = self._read_records() if self.count * self.dim <= HELD_RECORDS_FLOATS else None

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

    def search(self, query: np.ndarray, k: int, target: str = "image") -> list[SearchHit]:
        """Top-k items by cosine similarity; `text` searches caption vectors and answers the captioned item."""
        index = self._faiss.get(target)
        if index is None or index.ntotal == 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        k_factor = self._search_params[target].get("k_factor", 1)
        scores, rows = index.search(query, min(k * k_factor, index.ntotal))
        if target in self._reranked:
            rows, scores = self._rerank(self._vectors[target], query[0], rows[0], k)
        else:
            rows, scores = rows[0], scores[0]
        found = [(int(row), min(float(score), 1.0)) for row, score in zip(rows, scores, strict=True) if row >= 0]
        records = self._records_by_row([row for row, _ in found], "caption_row" if target == "text" else "row")
        return [SearchHit(records[row].id, score, records[row].path, records[row].caption)
                for row, score in found if row in records]

    def item(self, item_id: int) -> ItemRecord | None:
        with self._reading():
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return ItemRecord(*row) if row else None

    def image_vector(self, item_id: int) -> np.ndarray | None:
        """The stored image vector of one item (as the builder embedded it), or None for an unknown id."""
        with self._db_lock:
            row = self._db.execute("SELECT row FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else np.array(self.image_vectors()[row[0]], dtype=np.float32)

    def items(self) -> list[tuple[ItemRecord, int, int | None]]:
        """Every item with its row in vectors.npy and in captions.npy, for reuse by the next build."""
        with self._db_lock:
            rows = self._db.execute(f"SELECT {_COLUMNS}, row, caption_row FROM items ORDER BY row").fetchall()
        return [(ItemRecord(*row[:-2]), row[-2], row[-1]) for row in rows]

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
        with self._reading():
            found = self._db.execute(f"SELECT id, row FROM items WHERE id IN ({marks})", list(item_ids)).fetchall()
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

    @staticmethod
    def _rerank(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best candidates by their exact cosine, read from the memory-mapped stored vectors (in row order,
        so the reads move forward through the file)."""
        rows = np.sort(rows[rows >= 0])
        scores = vectors[rows] @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return rows[best], scores[best]

    def close(self) -> None:
        self._db.close()

    def _read_records(self) -> dict[str, dict[int, ItemRecord]]:
        """Every record by its row in the image vectors ("row") and in the caption vectors ("caption_row")."""
        with self._reading():
            found = self._db.execute(f"SELECT row, caption_row, {_COLUMNS} FROM items").fetchall()
        by_row, by_caption_row = {}, {}
        for row, caption_row, *fields in found:
            by_row[row] = record = ItemRecord(*fields)
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
        with self._reading():
            found = self._db.execute(f"SELECT {column}, {_COLUMNS} FROM items WHERE {column} IN ({marks})",
                                     rows).fetchall()
        return {row[0]: ItemRecord(*row[1:]) for row in found}

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One metadata read at a time; a meta.sqlite damaged under a running service is IndexCorrupt, never a crash."""
        with self._db_lock:
            try:
                yield
            except sqlite3.Error as error:
                raise IndexCorrupt(f"{self.path}: meta.sqlite cannot be read any more ({error}); publish a new "
                                   "version with `python -m index_builder`") from error

    def _verified_manifest(self) -> Manifest:
        try:
            manifest = Manifest.from_json((self.path / "manifest.json").read_text(), str(self.path))
        except OSError as error:
            raise IndexCorrupt(f"{self.path}: unreadable manifest.json: {error}") from error
        for name, expected in manifest.checksums.items():
            path = self.path / name
            if not path.exists() or _sha256_file(path) != expected:
                raise IndexCorrupt(f"{self.path}: {name} is missing or does not match its checksum")
        return manifest


_COLUMNS = "id, path, sha256, bytes, mtime_ns, width, height, caption"


def _training_sample(vectors: np.ndarray) -> np.ndarray:
    """At most TRAIN_SAMPLE rows, seeded, in file order: the same corpus always trains the same index."""
    if len(vectors) <= TRAIN_SAMPLE:
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), TRAIN_SAMPLE, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _first_line(error: Exception) -> str:
    """What a FAISS error says, without the C++ location before it and the stack after it."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0])


_CREATE_ITEMS = """CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
                  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                  width INTEGER NOT NULL, height INTEGER NOT NULL, caption TEXT,
                  row INTEGER NOT NULL UNIQUE, caption_row INTEGER UNIQUE)"""


def _numbered_versions(versions: Path) -> list[int]:
    return [int(path.name) for path in versions.iterdir() if path.name.isdigit()]


def _prune(versions: Path, keep: int) -> None:
    """Keep the newest `keep` versions: a service still finishing requests on the previous one keeps working."""
    for number in sorted(_numbered_versions(versions))[:-keep]:
        shutil.rmtree(versions / f"{number:04d}", ignore_errors=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        _fsync_file(child)
    _fsync_dir(path)
