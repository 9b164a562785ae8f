"""Scale benchmarks: a reindex costs in proportion to change, the builder's memory does not grow with the corpus,
and the Ray builder costs little more than the local one on the same machine.

Reindex and memory use many tiny generated JPEGs (64x48, ~2 kB) and the embedded model: what is measured is the
builder's own work per file (listing, stat, hashing, bookkeeping, writing), which real photos would hide behind
decoding. The Ray comparison uses the run's own corpus and model (photo-sized JPEGs, e.g. ViT-B-32), the work a
cluster is for; with tiny files and a tiny model it would time Ray's per-batch hand-offs against almost nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import load_average
from benchmarks.report import progress
from clipspace.encoder import DualEncoder
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import BuildReport, build_index
from index_builder.options import BuildOptions
from tests.launcher import REPO_ROOT

TINY_SIZE = (64, 48)


@dataclass(frozen=True)
class ReindexResult:
    files: int
    changed: int
    first_build_s: float
    embedded_per_s: float  # in the first build: the rate that prices "the time to embed the changed files"
    no_change_s: float
    changed_s: float
    changed_budget_s: float  # 2 x no-change + changed / embedded_per_s: the goal
    changed_read: int
    load_avg: list[float]


@dataclass(frozen=True)
class MemoryResult:
    builder: str  # "local" or "ray driver"
    sizes: list[int]
    peak_rss_mb: list[float]
    bytes_per_image: float  # slope of peak RSS between the smallest and the largest corpus
    load_avg: list[float]


@dataclass(frozen=True)
class RayOverheadResult:
    files: int
    model: str
    local_s: float
    ray_s: float
    overhead: float  # ray / local - 1
    load_avg: list[float]


def generate_tiny_corpus(root: Path, count: int, start: int = 0) -> None:
    """`count` distinct tiny JPEGs, 1000 per folder (as cameras and photo libraries lay them out)."""
    rng = np.random.default_rng(start)
    for index in range(start, start + count):
        folder = root / f"{index // 1000:05d}"
        if index % 1000 == 0 or index == start:
            folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (TINY_SIZE[1], TINY_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:07d}.jpg", quality=80)


def measure_reindex(encoder: DualEncoder, work_dir: Path, files: int, changed_fraction: float = 0.01,
                    workers: int = 2) -> ReindexResult:
    """First build, a no-change reindex, then a reindex after rewriting `changed_fraction` of the files."""
    images, index = work_dir / "reindex-images", work_dir / "reindex-index"
    progress(f"reindex: generating {files:,} tiny JPEGs")
    generate_tiny_corpus(images, files)
    options = BuildOptions(images=images, index=index, workers=workers, progress=False)
    progress("reindex: first build")
    first = _timed_build(options, encoder)[1]
    progress("reindex: no-change reindex")
    no_change_s, _ = _timed_build(options, encoder)
    changed = max(1, int(files * changed_fraction))
    rng = np.random.default_rng(1)
    for index_in_corpus in sorted(rng.choice(files, changed, replace=False)):
        path = images / f"{index_in_corpus // 1000:05d}" / f"{index_in_corpus:07d}.jpg"
        Image.fromarray(rng.integers(0, 256, (TINY_SIZE[1], TINY_SIZE[0], 3), dtype=np.uint8)).save(path, quality=80)
    progress(f"reindex: {changed:,} files changed")
    changed_s, report = _timed_build(options, encoder)
    budget = 2 * no_change_s + changed / first.embedded_per_s
    return ReindexResult(files, changed, round(first.seconds, 2), round(first.embedded_per_s, 1),
                         round(no_change_s, 2), round(changed_s, 2), round(budget, 2), report.read, load_average())


def measure_memory(work_dir: Path, sizes: list[int], ray: bool) -> MemoryResult:
    """Peak RSS of `python -m index_builder` (the driver, with --ray) at each corpus size, in a fresh process."""
    images = work_dir / "memory-images"
    peaks, have = [], 0
    for size in sorted(sizes):
        progress(f"memory ({'ray driver' if ray else 'local'}): {size:,} images")
        generate_tiny_corpus(images, size - have, start=have)
        have = size
        peaks.append(_peak_rss_kb(images, work_dir / f"memory-index-{'ray' if ray else 'local'}-{size}", ray))
    slope = (peaks[-1] - peaks[0]) * 1024 / (sizes[-1] - sizes[0]) if len(sizes) > 1 else 0.0
    return MemoryResult("ray driver" if ray else "local", sorted(sizes), [round(kb / 1024, 1) for kb in peaks],
                        round(slope, 1), load_average())


def measure_ray_overhead(encoder: DualEncoder, images: Path, files: int, warmup: Path, work_dir: Path,
                         batch_size: int, workers: int) -> RayOverheadResult:
    """The same first build of `images`, locally and through Ray (a local cluster on this machine, started and
    warmed up on `warmup` first: a cluster runs before a build starts, and its start is not the build's cost)."""
    from index_builder.on_ray import RayEmbedder, connect

    connect(None)

    def options(name: str, folder: Path = images) -> BuildOptions:
        return BuildOptions(images=folder, index=work_dir / name, batch_size=batch_size, workers=workers,
                            progress=False)

    progress("ray: warm-up build through Ray")
    build_index(options("ray-warmup", warmup), encoder, RayEmbedder(encoder, options("ray-warmup", warmup)))
    progress(f"ray: local build of {files:,} images")
    local_s = _timed_build(options("ray-local-index"), encoder)[0]
    progress("ray: the same build through Ray")
    started = time.perf_counter()
    build_index(options("ray-ray-index"), encoder, RayEmbedder(encoder, options("ray-ray-index")))
    ray_s = time.perf_counter() - started
    return RayOverheadResult(files, encoder.spec.model, round(local_s, 2), round(ray_s, 2),
                             round(ray_s / local_s - 1, 3), load_average())


def _timed_build(options: BuildOptions, encoder: DualEncoder) -> tuple[float, BuildReport]:
    started = time.perf_counter()
    report = build_index(options, encoder)
    return time.perf_counter() - started, report


_PEAK = re.compile(r"PEAK_RSS_KB (\d+)")
_CHILD = """import resource, sys
from index_builder.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _peak_rss_kb(images: Path, index: Path, ray: bool) -> int:
    command = [sys.executable, "-c", _CHILD, "--images", str(images), "--index", str(index), "--model",
               EMBEDDED_MODEL, "--quiet", *(["--ray"] if ray else [])]
    finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    found = _PEAK.search(finished.stderr)
    if finished.returncode != 0 or not found:
        raise RuntimeError(f"the memory benchmark's build failed: {finished.stderr[-2000:]}")
    return int(found.group(1))
