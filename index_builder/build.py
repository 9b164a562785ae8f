"""Build a new index version from a folder: list, reuse what is unchanged, embed the rest, publish atomically.

The build streams: the listing goes to a scratch SQLite plan, records to meta.sqlite and vectors to shards as
they are produced, so memory is bounded by a batch, not by the corpus. A file whose path, size and mtime are
unchanged is reused without being read; a file that is read is hashed, and its bytes decide whether a stored
vector (of its own path, or of a file that moved) still holds. What reads and embeds the rest is an `Embedder`:
threads and one model here (index_builder.local), Ray tasks and an actor pool on a cluster (index_builder.on_ray).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from clipspace.errors import ClipspaceError, IndexNotReady
from clipspace.fusion.rerank import find_reranker
from clipspace.images import IMAGE_SUFFIXES
from clipspace.index.calibration import Calibration, fit_calibration
from clipspace.index.choose import check_factory, choose_factory
from clipspace.index.publish import build_lock, open_current, publish_version
from clipspace.index.records import ItemRecord
from clipspace.index.shards import ShardedVectors
from clipspace.index.version import IndexVersion
from clipspace.index.writer import VersionWriter
from clipspace.runtimes import TORCH, Encoder
from index_builder.files import Movable, Processed, Work, list_images, read_caption
from index_builder.local import LocalEmbedder
from index_builder.options import BuildOptions, check_options
from index_builder.plan import Plan, PlanRow

log = logging.getLogger(__name__)

MAX_SKIPPED_IN_MANIFEST = 1000
CAPTION_BATCH = 256  # caption texts embedded per forward pass
PENDING_ITEMS = 4096  # items held while their captions wait for a batch: bounds the builder's memory
SCRATCH = ".work"  # an embedder's scratch folder inside the staging folder, removed before the version is sealed


@dataclass
class BuildReport:
    """What a build did; printed by the CLI and stored in the manifest."""

    version: str = ""
    added: int = 0
    updated: int = 0
    reused: int = 0
    moved: int = 0  # of `reused`: files found under a new path by their content hash
    read: int = 0  # files opened and hashed (the others were reused on path + size + mtime)
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # the first MAX_SKIPPED_IN_MANIFEST
    skipped_count: int = 0
    not_images: Counter[str] = field(default_factory=Counter)  # files listed but not read, by extension
    captions_embedded: int = 0
    captions_reused: int = 0
    texts_read: int = 0  # images whose text OCR read in this build (--ocr); the others kept theirs, or have none
    texts_found: int = 0  # of `texts_read`: those with text in them
    full_reembed_reason: str | None = None
    seconds: float = 0.0
    embedded_per_s: float = 0.0

    def skip(self, path: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_IN_MANIFEST:
            self.skipped.append((path, reason))
        log.warning("skipped %s: %s", path, reason)

    def as_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "reused": self.reused, "moved": self.moved,
                "read": self.read, "removed": self.removed, "skipped": self.skipped_count, "skipped_files": [
                    {"path": path, "reason": reason} for path, reason in self.skipped],
                "not_images": dict(sorted(self.not_images.items())),
                "captions_embedded": self.captions_embedded, "captions_reused": self.captions_reused,
                "texts_read": self.texts_read, "texts_found": self.texts_found,
                "full_reembed_reason": self.full_reembed_reason, "seconds": round(self.seconds, 3),
                "embedded_per_s": round(self.embedded_per_s, 2)}


class Embedder(Protocol):
    """Reads the files of `work` (in order) and answers each as a vector to reuse, a fresh vector, or a skip;
    with a `token_shape`, a fresh vector comes with its patch tokens."""

    def process(self, work: Iterable[Work], movable: dict[str, Movable], scratch: Path,
                token_shape: tuple[int, int] | None = None) -> Iterator[Processed]: ...

    def write_faiss(self, folder: Path, target: str, shards: tuple, dim: int, factory: str) -> dict[str, int]: ...


def build_index(options: BuildOptions, encoder: Encoder, embedder: Embedder | None = None) -> BuildReport:
    """Build and publish a new version of `options.index` from `options.images`; the old one serves meanwhile."""
    started = time.perf_counter()
    check_options(options)
    check_factory(options.index_type, encoder.dim)
    embedder = embedder or LocalEmbedder(encoder, options)
    token_shape = _token_shape(options, encoder)
    with build_lock(options.index):
        report = BuildReport()
        previous, vectors_valid, report.full_reembed_reason = _previous_version(options.index, encoder, token_shape)
        writer = VersionWriter(options.index, encoder.dim, previous if vectors_valid else None,
                               token_shape=token_shape)
        plan = Plan(writer.staging / ".plan.sqlite", previous.path / "meta.sqlite" if previous else None)
        try:
            _build(options, encoder, embedder, previous, vectors_valid, writer, plan, report)
            plan.close()
            shutil.rmtree(writer.staging / SCRATCH, ignore_errors=True)
            report.seconds = time.perf_counter() - started
            embedded = report.added + report.updated
            report.embedded_per_s = embedded / report.seconds if embedded else 0.0
            factory = choose_factory(options.index_type, writer.count, encoder.dim)
            staging = writer.finish(model=encoder.identity, factory=factory,
                                    corpus_root=options.images, report=report.as_dict(),
                                    next_id=previous.next_id if previous else 0, build=embedder.write_faiss,
                                    calibrate=functools.partial(_calibrate, encoder))
        except BaseException:
            plan.close()
            writer.abandon()
            raise
        finally:
            if previous:
                previous.close()
        report.version = publish_version(options.index, staging, keep=options.keep_versions)
        log.info("published version %s in %.1f s", report.version, time.perf_counter() - started)
        return report


def _build(options: BuildOptions, encoder: Encoder, embedder: Embedder, previous: IndexVersion | None,
           vectors_valid: bool, writer: VersionWriter, plan: Plan, report: BuildReport) -> None:
    root = Path(options.images)
    listed = plan.add_listing(list_images(root, options.max_file_bytes, report.not_images))
    if report.not_images:
        log.warning("not read, not image files: %s", ", ".join(f"{count} {suffix}" for suffix, count
                                                                  in report.not_images.most_common()))
    log.info("found %d images under %s (%d in the previous version)", listed, root,
             previous.count if previous else 0)
    if not listed:
        log.warning("no image files (%s) under %s: the new version is empty", ", ".join(sorted(IMAGE_SUFFIXES)), root)
    report.removed = plan.removed()
    trust_stat = vectors_valid and not options.verify

    def unchanged_on_disk(row: PlanRow) -> bool:
        return (trust_stat and row.complete and row.previous is not None
                and (row.size, row.mtime_ns) == (row.previous.bytes, row.previous.mtime_ns)
                and not (options.ocr and row.previous.ocr_text is None))  # OCR wanted, never run: read it once

    work = (Work(row.seq, row.path, row.sha256 if vectors_valid else None, options.ocr,
                 row.previous is not None and row.previous.ocr_text is not None)
            for row in plan.rows() if row.rejected is None and not unchanged_on_disk(row))
    processed = embedder.process(work, plan.movable() if vectors_valid else {}, writer.staging / SCRATCH,
                                 writer.token_shape)
    items = _PendingItems(writer, encoder, report)
    new_ids = iter(range(previous.next_id if previous else 0, 1 << 62))
    with tqdm(total=listed, unit="img", desc="indexing", disable=not options.progress) as bar:
        for row in plan.rows():
            bar.update()
            if row.rejected is not None:
                report.skip(row.path, row.rejected)
                continue
            caption = read_caption(root / row.path) if row.has_caption else None
            item_id = row.id if row.id is not None else next(new_ids)
            if unchanged_on_disk(row):
                record = replace(row.previous, caption=caption)
                report.reused += 1
                items.add(record, row.row, row, vectors_valid)
                continue
            found = next(processed)
            if found.seq != row.seq:
                raise ClipspaceError(f"the embedder answered file #{found.seq} where #{row.seq} was expected")
            _add_processed(found, row, item_id, caption, items, report, vectors_valid)
            if bar.n % 256 == 0:
                bar.set_postfix_str(f"embedded {report.added + report.updated}, reused {report.reused}, "
                                    f"skipped {report.skipped_count}"
                                    + (f", text read in {report.texts_read}" if options.ocr else ""))
    items.flush()
    if options.ocr:
        log.info("OCR read %d images, %d with text in them", report.texts_read, report.texts_found)


def _add_processed(found: Processed, row: PlanRow, item_id: int, caption: str | None, items: _PendingItems,
                   report: BuildReport, vectors_valid: bool) -> None:
    report.read += 1
    if found.rejected is not None:
        report.skip(row.path, found.rejected)
        return
    text = found.ocr_text
    if found.unchanged and not found.text_read:  # the same bytes: the text read before (if any) still holds
        text = row.previous.ocr_text
    report.texts_read += found.text_read
    report.texts_found += found.text_read and bool(text)
    if found.unchanged:  # touched, copied back or restored: same bytes, same vector
        record = ItemRecord(item_id, row.path, found.sha256, found.size, found.mtime_ns, row.previous.width,
                            row.previous.height, caption, found.facts, text, found.layout or row.previous.layout)
        report.reused += 1
        items.add(record, row.row, row, vectors_valid)
        return
    record = ItemRecord(item_id, row.path, found.sha256, found.size, found.mtime_ns, found.width, found.height,
                        caption, found.facts, text, found.layout)
    if found.reuse_row is not None:
        report.reused += 1
        report.moved += 1
        items.add(record, found.reuse_row, None, vectors_valid)
        return
    if row.id is None:
        report.added += 1
    else:
        report.updated += 1
    items.add(record, found.vector, row, vectors_valid, found.tokens)


class _PendingItems:
    """Items on their way to the writer, held until their captions are embedded in one batch, then written in order."""

    def __init__(self, writer: VersionWriter, encoder: Encoder, report: BuildReport) -> None:
        self.writer = writer
        self.encoder = encoder
        self.report = report
        self.items: list[tuple[ItemRecord, np.ndarray | int, np.ndarray | int | str | None, np.ndarray | None]] = []
        self.texts = 0

    def add(self, record: ItemRecord, image: np.ndarray | int, before: PlanRow | None, vectors_valid: bool,
            tokens: np.ndarray | None = None) -> None:
        """`before` is the path's previous item: its caption vector is reused when the text did not change."""
        caption: np.ndarray | int | str | None = None
        if record.caption is not None:
            same_text = vectors_valid and before is not None and before.previous.caption == record.caption
            if same_text and before.caption_row is not None:
                caption = before.caption_row
                self.report.captions_reused += 1
            else:
                caption = record.caption
                self.texts += 1
        self.items.append((record, image, caption, tokens))
        if self.texts >= CAPTION_BATCH or len(self.items) >= PENDING_ITEMS:
            self.flush()

    def flush(self) -> None:
        texts = [caption for _, _, caption, _ in self.items if isinstance(caption, str)]
        vectors = iter(self.encoder.embed_texts(texts)) if texts else iter(())
        self.report.captions_embedded += len(texts)
        for record, image, caption, tokens in self.items:
            self.writer.add(record, image, next(vectors) if isinstance(caption, str) else caption, tokens)
        self.items.clear()
        self.texts = 0


def _calibrate(encoder: Encoder, images: ShardedVectors, captions: ShardedVectors,
               captioned: list[tuple[int, int, str]]) -> Calibration | None:
    """Every build fits the relevance calibration again, on the new version's vectors, for this model."""
    started = time.perf_counter()
    calibration = fit_calibration(images, captions, captioned, encoder.embed_texts, encoder.identity.fingerprint)
    if calibration is not None:
        log.info("relevance calibrated in %.1f s: %s", time.perf_counter() - started, ", ".join(
            f"{key} {mapping.method}" for key, mapping in calibration.maps.items()))
    return calibration


def _token_shape(options: BuildOptions, encoder: Encoder) -> tuple[int, int] | None:
    """The patch tokens this build keeps: those the model's re-ranker reads, when it has one (and they are wanted).

    Cached in the version, they let a re-ranked query skip decoding and embedding its 50 candidates
    (docs/decisions.md: ~76 ms recomputed, ~16 ms cached, for 7,104 bytes per image with the embedded model).
    """
    if not options.patch_tokens:
        return None
    if encoder.runtime != TORCH:  # the re-ranker reads torch's patch tokens; an int8 build keeps none
        log.info("no patch tokens kept: the %s towers do not answer them (a re-ranked query embeds its "
                 "candidates again)", encoder.runtime)
        return None
    reranker, _ = find_reranker(encoder, options.index)
    if reranker is None:
        return None
    shape = reranker.token_shape
    log.info("keeping the patch tokens of every image for re-ranking: %d x %d, %s bytes per image", *shape,
             f"{2 * shape[0] * shape[1]:,}")
    return shape


def _previous_version(index_dir: Path, encoder: Encoder,
                      token_shape: tuple[int, int] | None = None) -> tuple[IndexVersion | None, bool, str | None]:
    """The serving version (for stable ids) and whether its vectors are valid for this model (for reuse): a build
    that keeps patch tokens reuses only a version that kept the same ones."""
    try:
        version = open_current(index_dir)
    except IndexNotReady:
        return None, False, None
    except ClipspaceError as error:
        return None, False, f"the previous version cannot be reused ({error})"
    before, now = version.model, encoder.identity
    changed = before.differences(now)
    if changed:
        return version, False, (f"model changed ({', '.join(changed)}: {before.model} -> {now.model}): "
                                "every image is embedded again")
    if token_shape is not None and version.token_shape != token_shape:
        return version, False, ("the previous version keeps no patch tokens for this model's re-ranker: every image "
                                "is embedded again to keep them")
    return version, True, None

