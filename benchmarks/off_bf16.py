"""CPUs without bf16: our builder off bf16 (fp32 on torch, int8 on ONNX Runtime) against clip-retrieval's own
`clip_inference`, in one run, on the same JPEGs and the same weights (issue 20's goal: off bf16, ≥ 2.5× its images/s).

Every arm is a whole command in a fresh process, timed by wall clock from start to exit: interpreter, imports, model
load, reading, embedding, writing. That includes clip-retrieval's warm-up (two forward passes of a batch) and our
int8 arm's opening and verifying of its int8 towers; the int8 towers themselves are made once per model before the
timed runs (they are kept beside the index, as a second build finds them) and linked into each timed index. Each side
also times its own work, excluding start-up and model load: our manifest's `build_report.seconds` (listing, reading,
embedding; not writing the FAISS file) and clip-retrieval's `stats/0.json` `total_duration` (reading, embedding,
writing its .npy). Both sides load one checkpoint: our `--pretrained none` weights saved to a file, which
clip-retrieval loads as `open_clip:MODEL/PATH`. They get the same threads (ours `--threads`, clip-retrieval's torch
by OMP_NUM_THREADS), batch size and decode workers. Arms rotate their order between repeats, so background load hits
each alike; the median per arm is reported.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.corpus import Corpus, copy_subset
from benchmarks.report import progress
from clipspace.encoder import DualEncoder
from clipspace.index.publish import open_current
from clipspace.onnx_towers import RUNTIMES_DIR
from tests.launcher import REPO_ROOT

CLIP_RETRIEVAL = "clip-retrieval"
OURS = {"fp32": "fp32", "int8": "int8", "bf16 (reference)": "bf16"}  # arm -> --precision
OFF_BF16 = ("fp32", "int8")


@dataclass(frozen=True)
class ArmRun:
    arm: str
    wall_s: float  # the whole command
    work_s: float  # its own timing of the work, start-up and model load excluded


@dataclass(frozen=True)
class OffBf16Result:
    images: int
    threads: int
    batch_size: int
    workers: int
    checkpoint: str
    runs: list[ArmRun]
    wall_per_s: dict[str, float]  # images / median wall seconds, per arm
    work_per_s: dict[str, float]
    wall_ratio_vs_clip_retrieval: dict[str, float]
    work_ratio_vs_clip_retrieval: dict[str, float]
    best_off_bf16_ratio: float | None  # the goal: ≥ 2.5, on wall time
    int8_cosine_mean: float  # int8 index vectors against the fp32 index's, same files
    int8_cosine_min: float
    clip_retrieval_cosine_min: float | None  # its vectors against our fp32 index's: proves the same weights
    clip_retrieval_skipped: str | None


def measure_off_bf16(encoder: DualEncoder, corpus: Corpus, work_dir: Path, threads: int, batch_size: int,
                     workers: int, repeats: int, clip_retrieval_python: Path | None) -> OffBf16Result:
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / "weights.pt"
    torch.save({name: tensor.float() for name, tensor in encoder.model.state_dict().items()}, checkpoint)
    skipped = _clip_retrieval_skip_reason(encoder.spec.model, clip_retrieval_python)
    if skipped:
        progress(f"off-bf16: clip-retrieval arm skipped: {skipped}")
    arms = [*OURS] + ([] if skipped else [CLIP_RETRIEVAL])
    common = ["--images", str(corpus.root), "--model", encoder.spec.model, "--pretrained", str(checkpoint),
              "--threads", str(threads), "--batch-size", str(batch_size), "--workers", str(workers), "--quiet",
              "--no-onnx-export"]
    progress("off-bf16: making the int8 towers once (untimed)")
    towers = work_dir / "int8-towers"
    few = copy_subset(corpus, work_dir / "towers-images", 4).root
    _run([sys.executable, "-m", "index_builder", *common, "--images", str(few), "--index", str(towers),
          "--precision", "int8"])
    runs: list[ArmRun] = []
    first: dict[str, Path] = {}
    for repeat in range(repeats):
        for arm in arms[repeat % len(arms):] + arms[:repeat % len(arms)]:
            progress(f"off-bf16: {arm}, run {repeat + 1}/{repeats} ({corpus.count} images)")
            out = work_dir / f"{arm.split()[0]}-{repeat}"
            if arm == CLIP_RETRIEVAL:
                runs.append(_clip_retrieval(clip_retrieval_python, corpus, out, checkpoint, encoder.spec.model,
                                            threads, batch_size, workers))
            else:
                if OURS[arm] == "int8":
                    shutil.copytree(towers / RUNTIMES_DIR, out / RUNTIMES_DIR, copy_function=os.link)
                runs.append(_ours(common, out, OURS[arm], corpus.count))
            first.setdefault(arm, out)

    def median(arm: str, field: str) -> float:
        return round(corpus.count / statistics.median(getattr(run, field) for run in runs if run.arm == arm), 2)

    wall = {arm: median(arm, "wall_s") for arm in arms}
    work = {arm: median(arm, "work_s") for arm in arms}
    ours_fp32 = _index_vectors(first["fp32"])
    int8_cosines = _cosines(ours_fp32, _index_vectors(first["int8"]))
    theirs = None if skipped else _cosines(ours_fp32, _clip_retrieval_vectors(first[CLIP_RETRIEVAL]))

    def ratios(per_s: dict[str, float]) -> dict[str, float]:
        return {} if skipped else {arm: round(per_s[arm] / per_s[CLIP_RETRIEVAL], 3) for arm in OURS}

    wall_ratios = ratios(wall)
    return OffBf16Result(
        images=corpus.count, threads=threads, batch_size=batch_size, workers=workers, checkpoint=str(checkpoint),
        runs=runs, wall_per_s=wall, work_per_s=work, wall_ratio_vs_clip_retrieval=wall_ratios,
        work_ratio_vs_clip_retrieval=ratios(work),
        best_off_bf16_ratio=max(wall_ratios[arm] for arm in OFF_BF16) if wall_ratios else None,
        int8_cosine_mean=round(float(int8_cosines.mean()), 6), int8_cosine_min=round(float(int8_cosines.min()), 6),
        clip_retrieval_cosine_min=None if theirs is None else round(float(theirs.min()), 6),
        clip_retrieval_skipped=skipped)


def _clip_retrieval_skip_reason(model: str, python: Path | None) -> str | None:
    if python is None:
        return ("no --clip-retrieval-python (a venv with `pip install clip-retrieval`, kept apart: it pins old "
                "libraries; docs/lab-notes.md says how it was made)")
    if not Path(python).is_file():
        return f"{python} does not exist"
    if Path(model).suffix == ".json" or ":" in model:
        return f"clip-retrieval loads open_clip's named architectures only, not {model}"
    return None


def _run(command: list[str], env: dict[str, str] | None = None) -> float:
    """The wall seconds of `command`, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])}... failed ({done.returncode}): {done.stderr[-1500:]}")
    return seconds


def _ours(common: list[str], index: Path, precision: str, count: int) -> ArmRun:
    wall = _run([sys.executable, "-m", "index_builder", *common, "--index", str(index), "--precision", precision])
    version = open_current(index)
    try:
        report, found = version.manifest.build_report, version.model.precision
    finally:
        version.close()
    if report["added"] != count or found != precision:
        raise RuntimeError(f"the {precision} build embedded {report['added']} of {count} images in {found}")
    return ArmRun(precision if precision != "bf16" else "bf16 (reference)", round(wall, 3), report["seconds"])


def _clip_retrieval(python: Path, corpus: Corpus, out: Path, checkpoint: Path, model: str, threads: int,
                    batch_size: int, workers: int) -> ArmRun:
    command = [str(python), "-m", "clip_retrieval.cli", "inference", "--input_dataset", str(corpus.root),
               "--output_folder", str(out), "--clip_model", f"open_clip:{model}/{checkpoint}",
               "--batch_size", str(batch_size), "--num_prepro_workers", str(workers), "--enable_text", "False",
               "--enable_metadata", "False"]
    wall = _run(command, {"OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"})
    stats = json.loads((out / "stats" / "0.json").read_text())
    if stats["sample_count"] != corpus.count:
        raise RuntimeError(f"clip-retrieval embedded {stats['sample_count']} of {corpus.count} images")
    return ArmRun(CLIP_RETRIEVAL, round(wall, 3), round(stats["total_duration"], 3))


def _index_vectors(index: Path) -> dict[str, np.ndarray]:
    version = open_current(index)
    try:
        stored = version.image_vectors()
        return {record.path: np.asarray(stored[row], dtype=np.float64) for record, row, _ in version.items()}
    finally:
        version.close()


def _clip_retrieval_vectors(out: Path) -> dict[str, np.ndarray]:
    """Its vectors by file name: its metadata parquet lists each row's absolute path."""
    import pyarrow.parquet as pq

    paths = pq.read_table(out / "metadata" / "metadata_0.parquet").column("image_path").to_pylist()
    vectors = np.load(out / "img_emb" / "img_emb_0.npy").astype(np.float64)
    return {Path(path).name: vector / np.linalg.norm(vector) for path, vector in zip(paths, vectors, strict=True)}


def _cosines(ours: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> np.ndarray:
    if set(ours) != set(other):
        raise RuntimeError(f"the two sides embedded different files: {sorted(set(ours) ^ set(other))[:3]}")
    return np.array([float(ours[path] @ other[path]) for path in sorted(ours)])


def render_off_bf16(section: dict) -> list[str]:
    """The table of the section: images/s of each arm and its ratio to clip-retrieval, on wall time and work time."""
    lines = [f"off bf16: {section['images']} JPEGs, {section['threads']} threads, batch {section['batch_size']}, "
             f"{section['workers']} decode workers (benchmarks/off_bf16.py)",
             f"  {'arm':<18} {'wall img/s':>10} {'x clip-ret':>10} {'work img/s':>10} {'x clip-ret':>10}"]
    for arm, wall in section["wall_per_s"].items():
        lines.append(f"  {arm:<18} {wall:>10} {section['wall_ratio_vs_clip_retrieval'].get(arm, '-'):>10} "
                     f"{section['work_per_s'][arm]:>10} {section['work_ratio_vs_clip_retrieval'].get(arm, '-'):>10}")
    lines.append(f"  int8 vs fp32 vectors: cosine mean {section['int8_cosine_mean']}, worst "
                 f"{section['int8_cosine_min']}; clip-retrieval vs our fp32, worst: "
                 f"{section['clip_retrieval_cosine_min']}")
    if section["clip_retrieval_skipped"]:
        lines.append(f"  clip-retrieval skipped: {section['clip_retrieval_skipped']}")
    return lines
