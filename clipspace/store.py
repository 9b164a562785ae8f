"""Index versions on disk: write one beside the old, publish it atomically, open it, search it.

INDEX_DIR/current holds the name of the serving version; versions/NNNN/ holds manifest.json, vectors.npy,
image.faiss, text.faiss (when captions exist) and meta.sqlite. A version is written under a staging name,
verified, renamed into place, and only then named in `current` (an atomic rename), so a crash at any
moment leaves the previous version serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clipspace import __version__
from clipspace.errors import IndexBusy, IndexCorrupt, IndexNotReady, InvalidBuildOptions

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "current"
VERSIONS = "versions"
STAGING_PREFIX = ".staging-"
TARGETS = ("image", "text")
EXACT_SEARCH_LIMIT = 50_000  # exact search reads every vector per query (memory-bound); see docs/decisions.md


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


def choose_factory(index_type: str, count: int) -> str:
    """`auto` is exact search for small corpora and HNSW beyond; anything else is a FAISS factory string."""
    if index_type != "auto":
        return index_type
    return "Flat" if count < EXACT_SEARCH_LIMIT else "HNSW32,Flat"


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
            index.train(vectors)
    except RuntimeError as error:  # e.g. IVF with fewer vectors than lists
        raise InvalidBuildOptions(f"FAISS index {factory!r} over {len(vectors)} vectors: "
                                  f"{_first_line(error)}") from error
    if len(vectors):
        index.add(vectors)
    return index


def write_version(index_dir: Path, items: Sequence[ItemRecord], image_vectors: np.ndarray,
                  caption_vectors: np.ndarray, *, model: dict[str, Any], factory: str, corpus_root: Path,
                  report: dict[str, Any], next_id: int | None = None) -> Path:
    """Write a complete version into a staging folder and verify it; `publish_version` makes it current.

    Rows of `image_vectors` follow `items`; rows of `caption_vectors` follow the items that have a caption.
    `next_id` is the id the next new path will get: ids of deleted paths are never handed out again.
    """
    staging = Path(index_dir) / VERSIONS / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
    staging.mkdir(parents=True)
    image_vectors = np.ascontiguousarray(image_vectors, dtype=np.float32)
    caption_vectors = np.ascontiguousarray(caption_vectors, dtype=np.float32)
    np.save(staging / "vectors.npy", image_vectors)
    faiss.write_index(build_faiss(image_vectors, factory), str(staging / "image.faiss"))
    if len(caption_vectors):
        np.save(staging / "captions.npy", caption_vectors)
        faiss.write_index(build_faiss(caption_vectors, choose_factory("auto", len(caption_vectors))),
                          str(staging / "text.faiss"))
    _write_meta(staging / "meta.sqlite", items)
    files = sorted(path.name for path in staging.iterdir())
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "dim": int(image_vectors.shape[1]),
        "count": len(items),
        "caption_count": len(caption_vectors),
        "next_id": max([next_id or 0, *(item.id + 1 for item in items)]),
        "faiss_factory": factory,
        "corpus_root": str(Path(corpus_root).resolve()),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "builder_version": __version__,
        "build_report": report,
        "checksums": {name: _sha256_file(staging / name) for name in files},
    }
    _write_json(staging / "manifest.json", manifest)
    _fsync_tree(staging)
    IndexVersion(staging).close()  # re-read everything against the manifest before anyone can serve it
    return staging


def publish_version(index_dir: Path, staging: Path, keep: int = 3) -> str:
    """Rename a verified staging folder to the next version number and point `current` at it atomically."""
    versions = Path(index_dir) / VERSIONS
    name = f"{max(_numbered_versions(versions), default=0) + 1:04d}"
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
            self.dim: int = self.manifest["dim"]
            self.count: int = self.manifest["count"]
            self._faiss = {target: faiss.read_index(str(self.path / f"{target}.faiss")) for target in TARGETS
                           if (self.path / f"{target}.faiss").exists()}
            self._db = sqlite3.connect(f"file:{self.path / 'meta.sqlite'}?mode=ro", uri=True,
                                       check_same_thread=False)
            rows = self._db.execute("SELECT count(*) FROM items").fetchone()[0]
        except (OSError, KeyError, TypeError, RuntimeError, sqlite3.Error) as error:
            raise IndexCorrupt(f"{self.path}: cannot open this index version: {error}") from error
        image = self._faiss.get("image")
        if image is None or image.ntotal != self.count or image.d != self.dim or rows != self.count:
            raise IndexCorrupt(f"{self.path}: image.faiss and meta.sqlite do not hold the {self.count} "
                               f"vectors of dim {self.dim} that the manifest announces")
        self._db_lock = threading.Lock()

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def next_id(self) -> int:
        return self.manifest["next_id"]

    @property
    def corpus_root(self) -> Path:
        return Path(self.manifest["corpus_root"])

    def search(self, query: np.ndarray, k: int, target: str = "image") -> list[SearchHit]:
        """Top-k items by cosine similarity; `text` searches caption vectors and answers the captioned item."""
        index = self._faiss.get(target)
        if index is None or index.ntotal == 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        scores, rows = index.search(query, min(k, index.ntotal), params=search_params(index, k))
        found = [(int(row), min(float(score), 1.0)) for row, score in zip(rows[0], scores[0], strict=True) if row >= 0]
        records = self._records_by_row([row for row, _ in found], "caption_row" if target == "text" else "row")
        return [SearchHit(records[row].id, score, records[row].path, records[row].caption)
                for row, score in found if row in records]

    def item(self, item_id: int) -> ItemRecord | None:
        with self._reading():
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return ItemRecord(*row) if row else None

    def items(self) -> list[tuple[ItemRecord, int, int | None]]:
        """Every item with its row in vectors.npy and in captions.npy, for reuse by the next build."""
        with self._db_lock:
            rows = self._db.execute(f"SELECT {_COLUMNS}, row, caption_row FROM items ORDER BY row").fetchall()
        return [(ItemRecord(*row[:-2]), row[-2], row[-1]) for row in rows]

    def image_vectors(self) -> np.ndarray:
        return np.load(self.path / "vectors.npy", mmap_mode="r")

    def caption_vectors(self) -> np.ndarray:
        path = self.path / "captions.npy"
        return np.load(path, mmap_mode="r") if path.exists() else np.zeros((0, self.dim), np.float32)

    def index_type(self, target: str = "image") -> str | None:
        return type(self._faiss[target]).__name__ if target in self._faiss else None

    def close(self) -> None:
        self._db.close()

    def _records_by_row(self, rows: list[int], column: str) -> dict[int, ItemRecord]:
        if not rows:
            return {}
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

    def _verified_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as error:
            raise IndexCorrupt(f"{self.path}: unreadable manifest.json: {error}") from error
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorrupt(f"{self.path}: index format {manifest.get('format_version')} is not "
                               f"{FORMAT_VERSION}; rebuild it with this version of clipspace")
        for name, expected in manifest["checksums"].items():
            path = self.path / name
            if not path.exists() or _sha256_file(path) != expected:
                raise IndexCorrupt(f"{self.path}: {name} is missing or does not match its checksum")
        return manifest


_COLUMNS = "id, path, sha256, bytes, mtime_ns, width, height, caption"


def search_params(index: faiss.Index, k: int) -> faiss.SearchParameters | None:
    """HNSW must explore at least k candidates to be able to return k of them."""
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=max(128, k))
    return None


def _first_line(error: Exception) -> str:
    """What a FAISS error says, without the C++ location before it and the stack after it."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0])


def _write_meta(path: Path, items: Sequence[ItemRecord]) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("""CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
                      sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                      width INTEGER NOT NULL, height INTEGER NOT NULL, caption TEXT,
                      row INTEGER NOT NULL UNIQUE, caption_row INTEGER UNIQUE)""")
        caption_rows = iter(range(len(items)))
        db.executemany(f"INSERT INTO items ({_COLUMNS}, row, caption_row) VALUES (?,?,?,?,?,?,?,?,?,?)", [
            (*asdict(item).values(), row, next(caption_rows) if item.caption is not None else None)
            for row, item in enumerate(items)])
        db.commit()
    finally:
        db.close()


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


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


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
