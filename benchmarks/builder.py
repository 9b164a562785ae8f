"""Builder throughput: the real `build_index` end to end against the bare forward pass it wraps.

The ratio end-to-end / raw says how well the decode threads hide JPEG decoding behind inference (1.0 is
perfect). Builds run with JPEG draft on and off, interleaved so that background load hits both alike, and
the two indexes' vectors give the cosine between draft-decoded and fully decoded embeddings of each file.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.corpus import Corpus
from benchmarks.report import progress
from benchmarks.timing import time_calls
from clipspace.encoder import DualEncoder
from clipspace.images import load_image
from clipspace.index.publish import open_current
from index_builder.build import build_index
from index_builder.options import BuildOptions

MIN_DRAFT_COSINE = 0.999
RAW_WARMUP_BATCHES = 2


@dataclass(frozen=True)
class BuildRun:
    jpeg_draft: bool
    seconds: float
    builder_reported_per_s: float  # BuildReport.embedded_per_s: excludes writing and publishing the version


@dataclass(frozen=True)
class BuilderResult:
    batch_size: int
    workers: int
    runs: list[BuildRun]
    end_to_end_per_s: float  # draft on (the builder's default), median over runs
    end_to_end_no_draft_per_s: float
    raw_forward_per_s: float
    raw_batch_ms: list[float]
    decode_only_per_s: float  # decode + preprocess on `workers` threads, no model: the other ceiling
    ratio_end_to_end_over_raw: float
    draft_speedup: float
    draft_cosine_min: float
    draft_cosine_mean: float
    draft_cosine_ok: bool


def measure_builder(encoder: DualEncoder, corpus: Corpus, warmup: Corpus, work_dir: Path, batch_size: int,
                    workers: int, repeats: int) -> tuple[BuilderResult, Path]:
    """Warm up on a small copy, build `repeats` fresh indexes per draft setting, time the raw forward pass.

    Also answers one draft-on index, for the HTTP benchmark to serve.
    """
    def build(images: Corpus, jpeg_draft: bool) -> tuple[BuildRun, Path]:
        index = Path(tempfile.mkdtemp(prefix=f"index-draft-{'on' if jpeg_draft else 'off'}-", dir=work_dir))
        options = BuildOptions(images=images.root, index=index, batch_size=batch_size, workers=workers,
                               jpeg_draft=jpeg_draft, progress=False)
        started = time.perf_counter()
        report = build_index(options, encoder)
        seconds = time.perf_counter() - started
        if report.added != images.count or report.skipped:
            raise RuntimeError(f"benchmark build embedded {report.added} of {images.count} images "
                               f"(skipped: {report.skipped[:3]}); the numbers would be meaningless")
        return BuildRun(jpeg_draft, round(seconds, 4), round(report.embedded_per_s, 2)), index

    progress(f"warm-up build ({warmup.count} images)")
    build(warmup, jpeg_draft=True)
    runs: list[BuildRun] = []
    first_index: dict[bool, Path] = {}
    for repeat in range(repeats):
        for jpeg_draft in (True, False):
            progress(f"build {repeat + 1}/{repeats}, jpeg draft {'on' if jpeg_draft else 'off'} "
                      f"({corpus.count} images)")
            run, index = build(corpus, jpeg_draft)
            runs.append(run)
            first_index.setdefault(jpeg_draft, index)

    progress("raw forward pass")
    raw_batch = _preprocessed_batch(encoder, corpus, batch_size)
    batches = max(3, -(-corpus.count // batch_size))
    raw_seconds = time_calls(lambda _: encoder.embed_pixels(raw_batch), batches, RAW_WARMUP_BATCHES)
    raw_per_s = len(raw_batch) / statistics.median(raw_seconds)
    progress(f"decode only ({workers} threads)")
    decode_per_s = _decode_only_per_s(encoder, corpus, workers)

    def median_per_s(jpeg_draft: bool) -> float:
        return corpus.count / statistics.median(run.seconds for run in runs if run.jpeg_draft == jpeg_draft)

    on, off = median_per_s(True), median_per_s(False)
    cosines = _draft_cosines(first_index[True], first_index[False])
    result = BuilderResult(
        batch_size=batch_size, workers=workers, runs=runs, end_to_end_per_s=round(on, 2),
        end_to_end_no_draft_per_s=round(off, 2), raw_forward_per_s=round(raw_per_s, 2),
        raw_batch_ms=[round(seconds * 1000, 3) for seconds in raw_seconds],
        decode_only_per_s=round(decode_per_s, 2), ratio_end_to_end_over_raw=round(on / raw_per_s, 3),
        draft_speedup=round(on / off, 3), draft_cosine_min=round(float(cosines.min()), 6),
        draft_cosine_mean=round(float(cosines.mean()), 6),
        draft_cosine_ok=bool(cosines.min() >= MIN_DRAFT_COSINE))
    return result, first_index[True]


def _preprocessed_batch(encoder: DualEncoder, corpus: Corpus, batch_size: int) -> torch.Tensor:
    """One batch decoded exactly as the builder decodes by default (draft on), cycling a corpus smaller than it."""
    paths = [corpus.paths[index % corpus.count] for index in range(batch_size)]
    return torch.stack([encoder.preprocess(_decode(corpus.root / path, encoder.image_size)) for path in paths])


def _decode_only_per_s(encoder: DualEncoder, corpus: Corpus, workers: int) -> float:
    def prepare(path: str) -> torch.Tensor:
        return encoder.preprocess(_decode(corpus.root / path, encoder.image_size))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        started = time.perf_counter()
        for _pixels in pool.map(prepare, corpus.paths):
            pass
        return corpus.count / (time.perf_counter() - started)


def _decode(path: Path, draft_size: int | None) -> Image.Image:
    return load_image(path.read_bytes(), draft_size=draft_size)


def _draft_cosines(draft_index: Path, full_index: Path) -> np.ndarray:
    """Row-wise cosine of the same files' vectors in two indexes (vectors are unit length, so a dot product)."""
    vectors = []
    for index in (draft_index, full_index):
        version = open_current(index)
        try:
            rows = {record.path: row for record, row, _ in version.items()}
            stored = version.image_vectors()
            vectors.append(np.stack([stored[rows[path]] for path in sorted(rows)]))
        finally:
            version.close()
    return np.einsum("ij,ij->i", vectors[0].astype(np.float64), vectors[1].astype(np.float64))
