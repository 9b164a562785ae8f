"""Scan a folder, embed what is new or changed, reuse the rest, and publish a new index version."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipspace.encoder import DualEncoder
from clipspace.errors import ClipspaceError, ImageRejected, IndexNotReady, InvalidBuildOptions
from clipspace.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, is_image_path, load_image
from clipspace.store import (
    ItemRecord,
    build_lock,
    check_factory,
    choose_factory,
    open_current,
    publish_version,
    write_version,
)

log = logging.getLogger(__name__)

CAPTION_SUFFIX = ".txt"
MAX_CAPTION_CHARS = 2000
MAX_SKIPPED_IN_MANIFEST = 1000


@dataclass(frozen=True)
class BuildOptions:
    images: Path
    index: Path
    batch_size: int = 64
    workers: int = max(2, os.cpu_count() or 2)
    index_type: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_draft: bool = True
    keep_versions: int = 3
    max_file_bytes: int = 256 * 1024 * 1024
    progress: bool = True


@dataclass
class BuildReport:
    """What a build did; printed by the CLI and stored in the manifest."""

    version: str = ""
    added: int = 0
    updated: int = 0
    reused: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    captions_embedded: int = 0
    captions_reused: int = 0
    full_reembed_reason: str | None = None
    seconds: float = 0.0
    embedded_per_s: float = 0.0

    def as_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "reused": self.reused, "removed": self.removed,
                "skipped": len(self.skipped), "skipped_files": [
                    {"path": path, "reason": reason} for path, reason in self.skipped[:MAX_SKIPPED_IN_MANIFEST]],
                "captions_embedded": self.captions_embedded, "captions_reused": self.captions_reused,
                "full_reembed_reason": self.full_reembed_reason, "seconds": round(self.seconds, 3),
                "embedded_per_s": round(self.embedded_per_s, 2)}


@dataclass(frozen=True)
class _Known:
    """A path of the previous version: its record, and its vector rows when they are still valid."""

    record: ItemRecord
    row: int | None
    caption_row: int | None


@dataclass
class _Previous:
    """What the serving version offers the next build: stable ids always, vectors when the model is the same."""

    items: dict[str, _Known] = field(default_factory=dict)
    image_vectors: np.ndarray | None = None
    caption_vectors: np.ndarray | None = None
    next_id: int = 0


@dataclass(frozen=True)
class _Scanned:
    record: ItemRecord
    pixels: torch.Tensor | None = None  # set when the image must be embedded
    reused_row: int | None = None  # set when the previous vector is still right
    rejected: str | None = None  # set when the file cannot be used


def scan_images(root: Path) -> list[str]:
    """Image files under `root` (any case of extension, recursive, hidden folders skipped), sorted, relative."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found.extend(Path(folder, name).relative_to(root).as_posix() for name in files
                     if is_image_path(Path(name)) and not name.startswith("."))
    return sorted(found)


def check_options(options: BuildOptions) -> None:
    """Refuse what cannot work before any model is loaded or file is read."""
    if not Path(options.images).is_dir():
        raise InvalidBuildOptions(f"image folder not found: {options.images}")
    if min(options.batch_size, options.workers, options.keep_versions, options.max_file_bytes) < 1:
        raise InvalidBuildOptions("batch size, workers, versions kept and file size limit must be positive")


def build_index(options: BuildOptions, encoder: DualEncoder) -> BuildReport:
    """Build and publish a new version of `options.index` from `options.images`; the old one serves meanwhile."""
    started = time.perf_counter()
    check_options(options)
    check_factory(options.index_type, encoder.dim)
    root = Path(options.images)
    with build_lock(options.index):
        report = BuildReport()
        previous, report.full_reembed_reason = _previous_version(options.index, encoder)
        paths = scan_images(root)
        log.info("found %d images under %s (%d in the previous version)", len(paths), root, len(previous.items))
        if not paths:
            log.warning("no image files (%s) under %s: the new version is empty", ", ".join(sorted(
                IMAGE_SUFFIXES)), root)
        report.removed = len(set(previous.items) - set(paths))
        items: list[ItemRecord] = []
        reused_rows: list[int | None] = []  # per item: its row in the previous vectors, None when embedded now
        fresh: list[np.ndarray] = []
        embed_seconds = 0.0
        scanned = _scan_in_parallel(root, paths, previous, encoder, options)
        with tqdm(total=len(paths), unit="img", desc="indexing", disable=not options.progress) as bar:
            for batch in _batches_to_embed(scanned, options.batch_size):
                tick = time.perf_counter()
                fresh.append(_embed_batch(encoder, batch))
                embed_seconds += time.perf_counter() - tick
                for entry in batch:
                    _account(entry, previous, report)
                    if entry.rejected is None:
                        items.append(entry.record)
                        reused_rows.append(entry.reused_row)
                bar.update(len(batch))
                bar.set_postfix_str(f"embedded {report.added + report.updated}, reused {report.reused}, "
                                    f"skipped {len(report.skipped)}")
        image_vectors = _assemble(reused_rows, fresh, previous.image_vectors, encoder.dim)
        caption_vectors = _caption_vectors(items, previous, encoder, report)
        embedded = report.added + report.updated
        report.seconds = time.perf_counter() - started
        report.embedded_per_s = embedded / report.seconds if embedded else 0.0
        staging = write_version(options.index, items, image_vectors, caption_vectors, model=encoder.identity,
                                factory=choose_factory(options.index_type, len(items), encoder.dim), corpus_root=root,
                                report=report.as_dict(), next_id=previous.next_id)
        report.version = publish_version(options.index, staging, keep=options.keep_versions)
        log.info("published version %s (%.1f s in the image tower)", report.version, embed_seconds)
        return report


def _account(entry: _Scanned, previous: _Previous, report: BuildReport) -> None:
    if entry.rejected is not None:
        report.skipped.append((entry.record.path, entry.rejected))
        log.warning("skipped %s: %s", entry.record.path, entry.rejected)
    elif entry.reused_row is not None:
        report.reused += 1
    elif entry.record.path in previous.items:
        report.updated += 1
    else:
        report.added += 1


def _assemble(reused_rows: list[int | None], fresh: list[np.ndarray], previous_vectors: np.ndarray | None,
              dim: int) -> np.ndarray:
    """One array in item order: fresh rows in the order embedded, reused rows gathered once from the old file."""
    vectors = np.empty((len(reused_rows), dim), np.float32)
    fresh_at = [i for i, row in enumerate(reused_rows) if row is None]
    reused_at = [i for i, row in enumerate(reused_rows) if row is not None]
    if fresh_at:
        vectors[fresh_at] = np.concatenate(fresh)
    if reused_at:
        vectors[reused_at] = previous_vectors[[reused_rows[i] for i in reused_at]]
    return vectors


def _previous_version(index_dir: Path, encoder: DualEncoder) -> tuple[_Previous, str | None]:
    """The serving version's items (for stable ids) and, unless the model changed, its vectors (for reuse)."""
    try:
        version = open_current(index_dir)
    except IndexNotReady:
        return _Previous(), None
    except ClipspaceError as error:
        return _Previous(), f"the previous version cannot be reused ({error})"
    try:
        before, now = version.model, encoder.identity
        changed = [key for key in ("fingerprint", "precision", "preprocess") if before.get(key) != now[key]]
        listed = version.items()
        previous = _Previous(next_id=version.next_id, items={
            record.path: _Known(record, None if changed else row, None if changed else caption_row)
            for record, row, caption_row in listed})
        if changed:
            return previous, (f"model changed ({', '.join(changed)}: {before['model']} -> {now['model']}): "
                              "every image is embedded again")
        previous.image_vectors, previous.caption_vectors = version.image_vectors(), version.caption_vectors()
        return previous, None
    finally:
        version.close()


def _scan_in_parallel(root: Path, paths: list[str], previous: _Previous, encoder: DualEncoder,
                      options: BuildOptions) -> Iterator[_Scanned]:
    """Read, hash and (when needed) decode files on worker threads, yielding in order with bounded look-ahead.

    Pillow and hashlib release the GIL, so decoding overlaps with the model's forward pass; at most a few
    batches of decoded images exist at any time, whatever the size of the corpus.
    """
    new_ids = itertools.count(previous.next_id)
    draft = encoder.image_size if options.jpeg_draft else None

    def prepare(path: str, item_id: int) -> _Scanned:
        try:
            return _prepare(root, path, item_id, previous.items.get(path), encoder.preprocess, options, draft)
        except Exception as error:  # one strange file must never abort the build
            return _Scanned(_unusable(item_id, path), rejected=f"unexpected {type(error).__name__}: {error}")

    ahead: deque[Future[_Scanned]] = deque()
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="decode")
    try:
        for path in paths:
            known = previous.items.get(path)
            ahead.append(pool.submit(prepare, path, known.record.id if known else next(new_ids)))
            if len(ahead) >= 4 * options.batch_size:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:  # on Ctrl-C, drop the queued files instead of decoding them first
        pool.shutdown(wait=True, cancel_futures=True)


def _prepare(root: Path, path: str, item_id: int, known: _Known | None, preprocess: Callable,
             options: BuildOptions, draft: int | None) -> _Scanned:
    file = root / path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return _Scanned(_unusable(item_id, path), rejected="file name is not valid UTF-8; rename the file")
    if not file.resolve().is_relative_to(root.resolve()):
        return _Scanned(_unusable(item_id, path), rejected="a link to a file outside the image folder")
    stat = file.stat()
    if stat.st_size > options.max_file_bytes:
        return _Scanned(_unusable(item_id, path), rejected=f"file is {stat.st_size:,} bytes; the limit is "
                                                           f"{options.max_file_bytes:,}")
    data = file.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    caption = _read_caption(file)
    if known is not None and known.row is not None and known.record.sha256 == sha256:
        record = replace(known.record, bytes=len(data), mtime_ns=stat.st_mtime_ns, caption=caption)
        return _Scanned(record, reused_row=known.row)
    try:
        image = load_image(data, max_pixels=options.max_pixels, draft_size=draft)
    except ImageRejected as error:
        return _Scanned(_unusable(item_id, path), rejected=str(error))
    width, height = image.info["original_size"]
    record = ItemRecord(item_id, path, sha256, len(data), stat.st_mtime_ns, width, height, caption)
    return _Scanned(record, pixels=preprocess(image))


def _unusable(item_id: int, path: str) -> ItemRecord:
    """A record that only carries a printable name for the report (names may hold undecodable bytes)."""
    printable = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return ItemRecord(item_id, printable, "", 0, 0, 0, 0, None)


def _read_caption(image_file: Path) -> str | None:
    """A sidecar `photo.txt` beside `photo.jpg` is the image's caption (stripped, capped, UTF-8)."""
    sidecar = image_file.with_suffix(CAPTION_SUFFIX)
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text[:MAX_CAPTION_CHARS] or None


def _embed_batch(encoder: DualEncoder, batch: list[_Scanned]) -> np.ndarray:
    pixels = [entry.pixels for entry in batch if entry.pixels is not None]
    return encoder.embed_pixels(torch.stack(pixels)) if pixels else np.zeros((0, encoder.dim), np.float32)


def _batches_to_embed(scanned: Iterable[_Scanned], batch_size: int) -> Iterator[list[_Scanned]]:
    """Group scanned files so each group holds `batch_size` images to embed (reused and skipped ride along)."""
    batch, pending = [], 0
    for entry in scanned:
        batch.append(entry)
        pending += entry.pixels is not None
        if pending == batch_size or (pending == 0 and len(batch) >= batch_size):
            yield batch
            batch, pending = [], 0
    if batch:
        yield batch


def _caption_vectors(items: list[ItemRecord], previous: _Previous, encoder: DualEncoder,
                     report: BuildReport) -> np.ndarray:
    """Caption vectors in item order: reused where the same item had the same caption, embedded otherwise."""
    captioned = [item for item in items if item.caption is not None]
    vectors = np.empty((len(captioned), encoder.dim), np.float32)
    missing = []
    for index, item in enumerate(captioned):
        known = previous.items.get(item.path)
        if known is not None and known.caption_row is not None and known.record.caption == item.caption:
            vectors[index] = previous.caption_vectors[known.caption_row]
        else:
            missing.append(index)
    if missing:
        log.info("embedding %d captions", len(missing))
        vectors[missing] = encoder.embed_texts([captioned[i].caption for i in missing])
    report.captions_embedded = len(missing)
    report.captions_reused = len(captioned) - len(missing)
    return vectors
