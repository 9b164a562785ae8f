"""Writing a new version into a staging folder: item records, vector shards, FAISS indexes, manifest, verified."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clipspace import __version__
from clipspace.errors import IndexWriteFailed
from clipspace.index.calibration import Calibration
from clipspace.index.choose import build_faiss, choose_factory, faiss_error_line, tuned_search_params
from clipspace.index.duplicates import THRESHOLD, group_items, write_groups
from clipspace.index.keywords import CREATE_KEYWORDS, add_keywords
from clipspace.index.layout import TOLERANCE
from clipspace.index.manifest import Manifest, ModelIdentity, Shard
from clipspace.index.publish import STAGING_PREFIX, VERSIONS, fsync_tree, writing
from clipspace.index.records import CREATE_ITEMS, INSERT_ITEM, ItemRecord, item_row
from clipspace.index.shards import FLOAT16, SHARD_ROWS, ShardedVectors, ShardWriter
from clipspace.index.version import IndexVersion, sha256_file


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


Calibrate = Callable[[ShardedVectors, ShardedVectors, list[tuple[int, int, str]]], Calibration | None]


def write_faiss(folder: Path, target: str, shards: Sequence[Shard], dim: int, factory: str) -> dict[str, int]:
    """Build `target`.faiss over the shards of a staged version and answer its tuned search parameters
    (a plain function: Ray runs it off the driver)."""
    vectors = np.ascontiguousarray(ShardedVectors(folder, shards, dim), dtype=np.float32)
    index = build_faiss(vectors, factory)
    try:
        faiss.write_index(index, str(Path(folder) / f"{target}.faiss"))
    except RuntimeError as error:  # FAISS reports a failed write (e.g. a full disk) as a RuntimeError
        raise IndexWriteFailed(f"cannot write {target}.faiss: {faiss_error_line(error)}") from error
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
            self._db.execute(CREATE_ITEMS)
            self._db.execute(CREATE_KEYWORDS)
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
        self._pending.append((item, self.count, caption_row))
        self.count += 1
        self.next_id = max(self.next_id, item.id + 1)
        if len(self._pending) >= self.RECORDS_PER_INSERT:
            self._flush()

    def finish(self, *, model: ModelIdentity, factory: str, corpus_root: Path, report: dict[str, Any],
               next_id: int = 0, build: Callable[..., dict[str, int]] = write_faiss,
               calibrate: Calibrate | None = None) -> Path:
        """Close the shards, build the FAISS indexes (with `build`), fit the relevance calibration (with
        `calibrate`, given the staged vectors and the captioned items), write the manifest, fsync and verify."""
        with writing(self.index_dir):
            return self._finish(model, factory, corpus_root, report, next_id, build, calibrate)

    def _finish(self, model: ModelIdentity, factory: str, corpus_root: Path, report: dict[str, Any], next_id: int,
                build: Callable[..., dict[str, int]], calibrate: Calibrate | None) -> Path:
        self._flush()
        self._db.commit()
        image_shards, caption_shards = tuple(self.images.close()), tuple(self.captions.close())
        calibration = calibrate(ShardedVectors(self.staging, image_shards, self.dim),
                                ShardedVectors(self.staging, caption_shards, self.dim),
                                self._db.execute("SELECT row, caption_row, caption FROM items WHERE caption_row "
                                                 "IS NOT NULL ORDER BY row").fetchall()) if calibrate else None
        token_shards = tuple(self.tokens.close()) if self.tokens else ()
        report = {**report, "duplicates": self._group_duplicates(image_shards)}
        self._db.commit()
        self._db.close()
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
            token_shape=self.token_shape, token_shards=token_shards, calibration=calibration,
            checksums={path.name: known[path.name] if path.name in reused else sha256_file(path)
                       for path in sorted(self.staging.iterdir())})
        (self.staging / "manifest.json").write_text(manifest.to_json())
        fsync_tree(self.staging)
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
        self._db.executemany(INSERT_ITEM, (item_row(*pending) for pending in self._pending))
        add_keywords(self._db, (item for item, _, _ in self._pending))
        self._pending.clear()

    def _group_duplicates(self, image_shards: tuple[Shard, ...]) -> dict[str, Any]:
        """Group the duplicates (clipspace.index.duplicates) into meta.sqlite; what was done, for the report.

        Items unchanged since the previous version (same id, same content hash) keep their groups when that
        version has groups: only new and changed items (and the members of a group whose representative is gone)
        are searched for and placed."""
        started = time.perf_counter()
        found = self._db.execute("SELECT id, sha256, layout FROM items ORDER BY row").fetchall()
        ids, hashes = np.array([item_id for item_id, *_ in found], dtype=np.int64), [digest for _, digest, _ in found]
        previous = kept = None
        if self.previous is not None and self.previous.has_duplicate_groups:
            before = self.previous.content_hashes()
            previous = self.previous.duplicates
            kept = np.array([before.get(item_id) == digest for item_id, digest in zip(ids, hashes, strict=True)])
        vectors = np.asarray(ShardedVectors(self.staging, image_shards, self.dim), dtype=np.float32)
        groups = group_items(ids, hashes, vectors.reshape(-1, self.dim), previous=previous, kept=kept,
                             layouts=[signature for *_, signature in found])
        write_groups(self._db, groups)
        return {"threshold": THRESHOLD, "layout_tolerance": TOLERANCE, "groups": len(set(groups.values())),
                "grouped_items": len(groups),
                "unchanged_items": int(kept.sum()) if kept is not None else 0,
                "seconds": round(time.perf_counter() - started, 3)}

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


def _add_vector(writer: ShardWriter, vector: np.ndarray | int) -> None:
    if isinstance(vector, int | np.integer):
        writer.add_previous(int(vector))
    else:
        writer.add(vector)
