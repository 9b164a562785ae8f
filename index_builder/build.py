"""Scan a folder, embed what is new or changed, reuse the rest, and publish a new index version."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipspace.encoder import DualEncoder
from clipspace.errors import ClipspaceError, ImageRejected, IndexNotReady
from clipspace.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, is_image_path, load_image
from clipspace.store import (
    ItemRecord,
    build_lock,
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
class _Previous:
    """What the last version knows about a path, to reuse its vectors when the content is unchanged."""

    record: ItemRecord
    vector: np.ndarray
    caption_vector: np.ndarray | None


@dataclass(frozen=True)
class _Scanned:
    record: ItemRecord
    pixels: torch.Tensor | None = None  # set when the image must be embedded
    reused: _Previous | None = None  # set when the previous vector is still right
    rejected: str | None = None  # set when the file cannot be used


def scan_images(root: Path) -> list[str]:
    """Image files under `root` (any case of extension, recursive, hidden folders skipped), sorted, relative."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found.extend(Path(folder, name).relative_to(root).as_posix() for name in files
                     if is_image_path(Path(name)) and not name.startswith("."))
    return sorted(found)


def build_index(options: BuildOptions, encoder: DualEncoder) -> BuildReport:
    """Build and publish a new version of `options.index` from `options.images`; the old one serves meanwhile."""
    started = time.perf_counter()
    root = Path(options.images)
    if not root.is_dir():
        raise ClipspaceError(f"image folder not found: {root}")
    with build_lock(options.index):
        report = BuildReport()
        previous, report.full_reembed_reason = _previous_items(options.index, encoder)
        paths = scan_images(root)
        log.info("found %d images under %s (%d in the previous version)", len(paths), root, len(previous))
        if not paths:
            log.warning("no image files (%s) under %s: the new version is empty", ", ".join(sorted(
                IMAGE_SUFFIXES)), root)
        report.removed = len(set(previous) - set(paths))
        next_id = max((item.record.id for item in previous.values()), default=-1) + 1
        items, vectors, embed_seconds, embedded = [], [], 0.0, 0
        scanned = _scan_in_parallel(root, paths, previous, encoder, options, next_id)
        with tqdm(total=len(paths), unit="img", desc="indexing", disable=not options.progress) as bar:
            for batch in _batches_to_embed(scanned, options.batch_size):
                tick = time.perf_counter()
                fresh_rows = iter(_embed_batch(encoder, batch))
                embed_seconds += time.perf_counter() - tick
                for entry in batch:
                    if entry.rejected is not None:
                        report.skipped.append((entry.record.path, entry.rejected))
                        log.warning("skipped %s: %s", entry.record.path, entry.rejected)
                        continue
                    items.append(entry.record)
                    if entry.reused is not None:
                        vectors.append(entry.reused.vector)
                        report.reused += 1
                    else:
                        vectors.append(next(fresh_rows))
                        embedded += 1
                        report.updated += entry.record.path in previous
                        report.added += entry.record.path not in previous
                bar.update(len(batch))
                bar.set_postfix_str(f"embedded {embedded}, reused {report.reused}, skipped {len(report.skipped)}")
        image_vectors = np.stack(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
        caption_vectors = _caption_vectors(items, previous, encoder, report)
        report.seconds = time.perf_counter() - started
        report.embedded_per_s = embedded / report.seconds if embedded else 0.0
        staging = write_version(options.index, items, image_vectors, caption_vectors, model=encoder.identity,
                                factory=choose_factory(options.index_type, len(items)), corpus_root=root,
                                report=report.as_dict())
        report.version = publish_version(options.index, staging, keep=options.keep_versions)
        log.info("published version %s (%.1f s in the image tower)", report.version, embed_seconds)
        return report


def _previous_items(index_dir: Path, encoder: DualEncoder) -> tuple[dict[str, _Previous], str | None]:
    """Items of the serving version keyed by path, or none (with the reason) when they cannot be reused."""
    try:
        version = open_current(index_dir)
    except IndexNotReady:
        return {}, None
    except ClipspaceError as error:
        return {}, f"the previous version cannot be reused ({error})"
    try:
        before, now = version.model, encoder.identity
        if before["fingerprint"] != now["fingerprint"] or before["preprocess"] != now["preprocess"]:
            return {}, f"model changed ({before['model']} -> {now['model']}): every image is embedded again"
        image_vectors, caption_vectors = version.image_vectors(), version.caption_vectors()
        return {record.path: _Previous(record, np.array(image_vectors[row]),
                                       None if caption_row is None else np.array(caption_vectors[caption_row]))
                for record, row, caption_row in version.items()}, None
    finally:
        version.close()


def _scan_in_parallel(root: Path, paths: list[str], previous: dict[str, _Previous], encoder: DualEncoder,
                      options: BuildOptions, first_new_id: int) -> Iterator[_Scanned]:
    """Read, hash and (when needed) decode files on worker threads, yielding in order with bounded look-ahead.

    Pillow and hashlib release the GIL, so decoding overlaps with the model's forward pass; at most a few
    batches of decoded images exist at any time, whatever the size of the corpus.
    """
    new_ids = iter(range(first_new_id, first_new_id + len(paths)))
    draft = encoder.image_size if options.jpeg_draft else None

    def prepare(path: str, item_id: int) -> _Scanned:
        return _prepare(root, path, item_id, previous.get(path), encoder.preprocess, options.max_pixels, draft)

    ahead: deque[Future[_Scanned]] = deque()
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="decode") as pool:
        for path in paths:
            known = previous.get(path)
            ahead.append(pool.submit(prepare, path, known.record.id if known else next(new_ids)))
            if len(ahead) >= 4 * options.batch_size:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _prepare(root: Path, path: str, item_id: int, known: _Previous | None, preprocess: Callable,
             max_pixels: int, draft: int | None) -> _Scanned:
    file = root / path
    try:
        data = file.read_bytes()
        stat = file.stat()
    except OSError as error:
        return _Scanned(ItemRecord(item_id, path, "", 0, 0, 0, 0, None), rejected=f"unreadable: {error}")
    sha256 = hashlib.sha256(data).hexdigest()
    caption = _read_caption(file)
    if known is not None and known.record.sha256 == sha256:
        record = ItemRecord(item_id, path, sha256, len(data), stat.st_mtime_ns, known.record.width,
                            known.record.height, caption)
        return _Scanned(record, reused=known)
    try:
        image = load_image(data, max_pixels=max_pixels, draft_size=draft)
    except ImageRejected as error:
        return _Scanned(ItemRecord(item_id, path, sha256, len(data), 0, 0, 0, None), rejected=str(error))
    width, height = image.info["original_size"]
    record = ItemRecord(item_id, path, sha256, len(data), stat.st_mtime_ns, width, height, caption)
    return _Scanned(record, pixels=preprocess(image))


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


def _caption_vectors(items: list[ItemRecord], previous: dict[str, _Previous], encoder: DualEncoder,
                     report: BuildReport) -> np.ndarray:
    """Caption vectors in item order: reused where the same item had the same caption, embedded otherwise."""
    captioned = [item for item in items if item.caption is not None]
    vectors: list[np.ndarray | None] = []
    for item in captioned:
        known = previous.get(item.path)
        same = known is not None and known.caption_vector is not None and known.record.caption == item.caption
        vectors.append(known.caption_vector if same else None)
    missing = [index for index, vector in enumerate(vectors) if vector is None]
    if missing:
        log.info("embedding %d captions", len(missing))
        for index, vector in zip(missing, encoder.embed_texts([captioned[i].caption for i in missing]),
                                 strict=True):
            vectors[index] = vector
    report.captions_embedded = len(missing)
    report.captions_reused = len(captioned) - len(missing)
    return np.stack(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
