"""`python -m benchmarks`: builder throughput, query latency and FAISS search cost for one model, in one run.

Every ratio is taken against a baseline measured in the same run on the same machine, and the JSON file
records the machine and the exact command, so two runs can be compared honestly (or seen not to be comparable).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before open_clip imports huggingface_hub: never reach the network

import argparse
import contextlib
import json
import logging
import shlex
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from benchmarks.builder import measure_builder
from benchmarks.corpus import copy_subset, existing_corpus, generate_corpus
from benchmarks.faiss_search import measure_faiss
from benchmarks.latency import REPO_ROOT, measure_latency
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import progress, render
from benchmarks.scale import measure_memory, measure_ray_overhead, measure_reindex
from clipspace.encoder import PRECISIONS, DualEncoder, ModelSpec, load_encoder
from clipspace.errors import ClipspaceError
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import BuildOptions

TINY_MODEL = REPO_ROOT / "tests" / "assets" / "tiny-clip.json"
SECTIONS = ("http", "faiss", "reindex", "memory", "ray")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the builder end to end against the raw forward pass, text-query latency through "
                    "HTTP against the bare embed call, and FAISS search at larger sizes. The default is a quick "
                    "smoke run with a tiny random model; a realistic run: --model ViT-B-32 --precision bf16.")
    parser.add_argument("--model", default=str(TINY_MODEL),
                        help="open_clip model name, hf-hub:/local-dir: reference or architecture .json")
    parser.add_argument("--pretrained", default="none", help="weights tag or checkpoint; 'none' = seeded random")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, here and in the service")
    parser.add_argument("--images", type=int, default=256, help="how many JPEGs to generate")
    parser.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT of generated JPEGs")
    parser.add_argument("--corpus", type=Path, default=None, help="use this image folder instead of generating")
    parser.add_argument("--batch-size", type=int, default=BuildOptions.batch_size)
    parser.add_argument("--workers", type=int, default=BuildOptions.workers, help="builder decode threads")
    parser.add_argument("--repeats", type=int, default=3, help="builds per jpeg draft setting (median reported)")
    parser.add_argument("--queries", type=int, default=100, help="timed text queries, after warm-up")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the load test (below 2: skip it)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--faiss-sizes", default="10000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--faiss-queries", type=int, default=200)
    parser.add_argument("--reindex-files", type=int, default=2000,
                        help="tiny files for the reindex benchmark (issue 8: 100000)")
    parser.add_argument("--memory-sizes", default="1000,4000",
                        help="corpus sizes for the builder's peak-RSS slope (issue 8: 10000,200000)")
    parser.add_argument("--ray-files", type=int, default=1000, help="tiny files for Ray against local")
    parser.add_argument("--skip", action="append", choices=SECTIONS, default=[], help="leave a section out")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--note", default=None, help="a label kept with the results, e.g. 'contended'")
    args = parser.parse_args(argv)
    try:
        args.image_size = tuple(int(side) for side in args.image_size.lower().split("x"))
        args.faiss_sizes = [int(size) for size in args.faiss_sizes.split(",") if size.strip()]
        args.memory_sizes = [int(size) for size in args.memory_sizes.split(",") if size.strip()]
    except ValueError:
        parser.error("--image-size is WIDTHxHEIGHT and --faiss-sizes a list of integers")
    if len(args.image_size) != 2 or min(args.image_size) < 64:
        parser.error("--image-size must be WIDTHxHEIGHT, each side at least 64")
    if min(args.images, args.batch_size, args.workers, args.repeats, args.queries, args.k) < 1:
        parser.error("--images, --batch-size, --workers, --repeats, --queries and --k must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except (OSError, RuntimeError, ClipspaceError) as error:  # a bad input or a failed step: no numbers at all
        progress(f"benchmark failed: {error}")
        return 1
    print(render(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace) -> dict:
    """Every section in order (the HTTP one serves the index the builder section built); answers the result."""
    # The service loads the model named in the manifest from its own working directory: name files absolutely.
    model = str(Path(args.model).resolve()) if Path(args.model).is_file() else args.model
    encoder = load_encoder(ModelSpec(model, args.pretrained, args.precision, args.device), threads=args.threads)
    result = {"command": shlex.join([sys.executable, "-m", "benchmarks", *sys.argv[1:]]), "cwd": os.getcwd(),
              "note": args.note, "machine": describe_machine(), "model": _model_identity(encoder), "k": args.k}
    with tempfile.TemporaryDirectory(prefix="clipspace-bench-") as scratch:
        work_dir = Path(scratch)
        if args.corpus:
            corpus = existing_corpus(args.corpus)
        else:
            progress(f"generating {args.images} JPEGs of {args.image_size[0]}x{args.image_size[1]}")
            corpus = generate_corpus(work_dir / "corpus", args.images, args.image_size)
        warmup = copy_subset(corpus, work_dir / "warmup", args.batch_size)
        result["corpus"] = corpus.describe()
        builder, serving_index = measure_builder(encoder, corpus, warmup, work_dir, args.batch_size, args.workers,
                                                 args.repeats)
        result["builder"] = asdict(builder)
        if "http" not in args.skip:
            result["latency"] = asdict(measure_latency(encoder, serving_index, _service_env(args), args.queries,
                                                       warmup=10, k=args.k, concurrency=args.concurrency))
        if "faiss" not in args.skip and args.faiss_sizes:
            result["faiss"] = [asdict(entry) for entry in measure_faiss(args.faiss_sizes, encoder.dim,
                                                                        args.faiss_queries, args.k, work_dir)]
        result.update(_scale_sections(args, work_dir))
    result["machine"]["load_avg_end"] = load_average()
    return result


def _scale_sections(args: argparse.Namespace, work_dir: Path) -> dict:
    """Issue 8's numbers, always with the embedded model: they measure the builder's work per file, not a model."""
    sections: dict = {}
    wanted = [name for name in ("reindex", "memory", "ray") if name not in args.skip]
    if not wanted:
        return sections
    encoder = load_encoder(ModelSpec(EMBEDDED_MODEL, None, "fp32", args.device), threads=args.threads)
    if "reindex" in wanted and args.reindex_files:
        sections["reindex"] = asdict(measure_reindex(encoder, work_dir / "reindex", args.reindex_files))
    if "memory" in wanted and len(args.memory_sizes) > 1:
        sections["memory"] = [asdict(measure_memory(work_dir / "memory", args.memory_sizes, ray=False))]
        with _ray_may_fail(sections, "memory_ray_error"):  # a busy machine can miss Ray's start-up deadline
            sections["memory"].append(asdict(measure_memory(work_dir / "memory", args.memory_sizes, ray=True)))
    if "ray" in wanted and args.ray_files:
        with _ray_may_fail(sections, "ray_error"):
            sections["ray"] = asdict(measure_ray_overhead(encoder, work_dir / "ray", args.ray_files))
    return sections


@contextlib.contextmanager
def _ray_may_fail(sections: dict, key: str) -> Iterator[None]:
    """A Ray cluster that cannot start costs its own numbers, not every other number of the run."""
    try:
        yield
    except (RuntimeError, ConnectionError, ClipspaceError) as error:
        progress(f"Ray section failed: {error}")
        sections[key] = str(error)[-500:]


def _service_env(args: argparse.Namespace) -> dict[str, str]:
    """The service must run the model as this process does, or the HTTP / bare ratio compares unlike things."""
    env = {"CLIPSPACE_DEVICE": args.device}
    if args.threads:
        env["CLIPSPACE_THREADS"] = str(args.threads)
    return env


def _model_identity(encoder: DualEncoder) -> dict:
    spec = encoder.spec
    return {"model": spec.model, "pretrained": spec.pretrained, "precision": spec.precision, "device": spec.device,
            "dim": encoder.dim, "image_size": encoder.image_size, "fingerprint": encoder.fingerprint}


if __name__ == "__main__":
    sys.exit(main())
