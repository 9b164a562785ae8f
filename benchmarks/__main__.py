"""`python -m benchmarks`: builder throughput, query latency and FAISS search cost for one model, in one run.

Every ratio is taken against a baseline measured in the same run on the same machine, and the JSON file
records the machine and the exact command, so two runs can be compared honestly (or seen not to be comparable).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before open_clip imports huggingface_hub: never reach the network

import argparse
import contextlib
import importlib.util
import json
import logging
import shlex
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from benchmarks.ann_scale import measure_ann, measure_hnsw_ef
from benchmarks.builder import measure_builder
from benchmarks.clustered import ClusteredSpec
from benchmarks.corpus import copy_subset, existing_corpus, generate_corpus
from benchmarks.duplicates import measure_grouping_time
from benchmarks.duplicates import measure_quality as measure_duplicates
from benchmarks.faiss_search import measure_faiss
from benchmarks.filtered import SELECTIVITIES, measure_filtered
from benchmarks.keywords import measure_keywords
from benchmarks.latency import measure_latency
from benchmarks.load import measure_load
from benchmarks.machine import describe_machine, load_average
from benchmarks.ocr import measure_ocr
from benchmarks.off_bf16 import measure_off_bf16
from benchmarks.parity import measure_parity
from benchmarks.ratelimit import HAMMER_PER_S, RATE, measure_rate_isolation
from benchmarks.relevance import measure_relevance
from benchmarks.report import progress, render
from benchmarks.roofline import measure_roofline
from benchmarks.runtime import measure_runtimes
from benchmarks.scale import measure_memory, measure_ray_overhead, measure_reindex
from benchmarks.switch import measure_switch
from benchmarks.text import measure_text
from clipspace.encoder import DualEncoder, ModelSpec, default_precision, load_encoder
from clipspace.errors import ClipspaceError
from clipspace.identity import PRECISIONS
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import REPO_ROOT

TINY_MODEL = REPO_ROOT / "tests" / "assets" / "tiny-clip.json"
SECTIONS = ("builder", "http", "text", "load", "ratelimit", "switch", "faiss", "reindex", "memory", "ray", "keywords",
            "ocr", "relevance", "duplicates", "runtime", "parity", "offbf16", "roofline")


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
    parser.add_argument("--captions", type=int, default=2000, help="generated captions in the text section")
    parser.add_argument("--load-clients", type=int, default=16, help="clients in the load test")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="how long the load test runs")
    parser.add_argument("--switch-model", default="ViT-B-32",
                        help="the model built into the served folder under load in the switch section")
    parser.add_argument("--switch-pretrained", default="none", help="its weights ('none': random, no download)")
    parser.add_argument("--switch-clients", type=int, default=4, help="clients in the switch section")
    parser.add_argument("--ratelimit-rounds", type=int, default=6,
                        help="rate-limit isolation: rounds of 10 s alone and 10 s beside a hammering key")
    parser.add_argument("--ratelimit-hammer-per-s", type=int, default=HAMMER_PER_S,
                        help=f"rate-limit isolation: what the hammering key sends a second (its limit: {RATE})")
    parser.add_argument("--reindex-files", type=int, default=2000,
                        help="tiny files for the reindex benchmark (issue 8: 100000)")
    parser.add_argument("--memory-sizes", default="1000,4000",
                        help="corpus sizes for the builder's peak-RSS slope (issue 8: 10000,200000)")
    parser.add_argument("--keyword-items", type=int, default=1500, help="world scenes per keyword-channel corpus")
    parser.add_argument("--keyword-corpora", type=int, default=3, help="keyword-channel corpora (seeds), pooled")
    parser.add_argument("--keyword-queries", type=int, default=100, help="queries per kind and corpus")
    parser.add_argument("--duplicate-images", type=int, default=10_000,
                        help="generated images of the duplicates section (issue 22's goal: at least 10000)")
    parser.add_argument("--duplicate-vectors", type=int, default=100_000,
                        help="synthetic vectors (dim 512) the duplicates section groups for its timing (0: skip)")
    parser.add_argument("--ann-size", type=int, default=0,
                        help="also measure the index `auto` picks at this many clustered vectors (0: skip); "
                             "1000000 takes minutes and ~2.5 GB under --ann-cache")
    parser.add_argument("--ann-only", action="store_true", help="only the ANN section: no model, no builder")
    parser.add_argument("--ann-queries", type=int, default=200)
    parser.add_argument("--ann-dim", type=int, default=512)
    parser.add_argument("--ann-probe-size", type=int, default=100_000,
                        help="vectors for the HNSW efSearch sweep and issue 8's probe (0: skip them)")
    parser.add_argument("--ann-cache", type=Path, default=REPO_ROOT / "var" / "bench-data",
                        help="generated vectors and built versions are kept here between runs")
    parser.add_argument("--filtered-size", type=int, default=20_000,
                        help="filtered search against post-filtering at this many clustered vectors (0: skip); "
                             "the goals: 200000 (HNSW tier) and 1000000 (IVF-PQ tier)")
    parser.add_argument("--filtered-kind", default="auto",
                        help="the index of the filtered section: auto (the tier for its size) or a factory string")
    parser.add_argument("--ocr-pictures", type=int, default=60, help="rendered signs in the ocr section (its extra)")
    parser.add_argument("--parity-images", type=int, default=1000,
                        help="pictures per eval set in the parity section (the MODEL_CARDs: 1000)")
    parser.add_argument("--clip-retrieval-python", type=Path, default=os.environ.get("CLIPSPACE_CLIP_RETRIEVAL_PYTHON"),
                        help="offbf16: the python of a venv with clip-retrieval installed, to run its clip_inference "
                             "on the same files (env CLIPSPACE_CLIP_RETRIEVAL_PYTHON; without it that arm is skipped)")
    parser.add_argument("--roofline-rounds", type=int, default=3,
                        help="roofline section: interleaved rounds of every candidate and the roofline loop")
    parser.add_argument("--skip", action="append", choices=SECTIONS, default=[], help="leave a section out")
    parser.add_argument("--only", action="append", choices=SECTIONS, default=[],
                        help="run only this section (repeatable), e.g. --only load")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--plots", type=Path, default=REPO_ROOT / "var" / "benchmarks",
                        help="folder for the pictures a section draws (the relevance reliability plot)")
    parser.add_argument("--relevance-no-captions-model", default="ViT-B-32",
                        help="the open_clip model (random weights) of the relevance section's corpus without "
                             "captions; 'none' leaves it out")
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
    if set(_sections(args)) <= {"duplicates", "parity"}:  # no corpus to build
        result = {"command": shlex.join([sys.executable, "-m", "benchmarks", *sys.argv[1:]]), "cwd": os.getcwd(),
                  "note": args.note, "machine": describe_machine(), "k": args.k}
        if "duplicates" in _sections(args):
            result["duplicates"] = _duplicates(args)
        if "parity" in _sections(args):
            result["parity"] = _parity(args)
        result["machine"]["load_avg_end"] = load_average()
        return result
    if args.ann_only:
        result = {"command": shlex.join([sys.executable, "-m", "benchmarks", *sys.argv[1:]]), "cwd": os.getcwd(),
                  "note": args.note, "machine": describe_machine(), "k": args.k, **run_ann(args)}
        result["machine"]["load_avg_end"] = load_average()
        return result
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
        sections = _sections(args)
        if "builder" in sections:
            builder, serving_index = measure_builder(encoder, corpus, warmup, work_dir, args.batch_size,
                                                     args.workers, args.repeats)
            result["builder"] = asdict(builder)
        elif {"http", "load", "ratelimit"} & set(sections):
            progress(f"building the index to serve ({corpus.count} images)")
            serving_index = work_dir / "index"
            build_index(BuildOptions(images=corpus.root, index=serving_index, batch_size=args.batch_size,
                                     workers=args.workers, progress=False), encoder)
        if "http" in sections:
            result["latency"] = asdict(measure_latency(encoder, serving_index, _service_env(args), args.queries,
                                                       warmup=10, k=args.k, concurrency=args.concurrency))
        if "text" in sections:
            result["text"] = asdict(measure_text(encoder, args.captions, args.queries))
        if "load" in sections:
            result["load"] = asdict(measure_load(serving_index, [corpus.root / path for path in corpus.paths[:32]],
                                                 _service_env(args), args.load_clients, args.load_seconds,
                                                 work_dir / "load-uvicorn.log"))
        if "switch" in sections:
            result["switch"] = asdict(measure_switch(
                corpus.root, [(corpus.root / path).read_bytes() for path in corpus.paths[:32]], work_dir,
                _service_env(args), args.switch_clients, (args.switch_model, args.switch_pretrained),
                _builder_args(args)))
        if "ratelimit" in sections:
            result["ratelimit"] = asdict(measure_rate_isolation(serving_index, _service_env(args),
                                                                work_dir / "ratelimit", args.ratelimit_rounds,
                                                                hammer_per_s=args.ratelimit_hammer_per_s))
        if "faiss" in sections and args.faiss_sizes:
            result["faiss"] = [asdict(entry) for entry in measure_faiss(args.faiss_sizes, encoder.dim,
                                                                        args.faiss_queries, args.k, work_dir)]
        result.update(_scale_sections(args, work_dir))
        if "relevance" in sections:
            result["relevance"] = _relevance_section(args, work_dir)
        if "ocr" in sections and importlib.util.find_spec("rapidocr_onnxruntime"):
            result["ocr"] = asdict(measure_ocr(encoder, work_dir, args.ocr_pictures, args.workers))
        if "runtime" in sections and importlib.util.find_spec("onnxruntime"):
            result["runtime"] = measure_runtimes(_with_the_embedded_model(encoder, args), corpus, work_dir,
                                                 _service_env(args), args.queries, args.threads)
        if "offbf16" in sections and importlib.util.find_spec("onnxruntime"):
            result["off_bf16"] = asdict(measure_off_bf16(
                encoder, corpus, work_dir / "off-bf16", args.threads or os.cpu_count() or 1, args.batch_size,
                args.workers, args.repeats, args.clip_retrieval_python))
        if "roofline" in sections:
            result["roofline"] = measure_roofline(encoder, corpus, warmup, work_dir, args.batch_size, args.workers,
                                                  args.roofline_rounds, args.repeats)
        if "ray" in sections:
            with _ray_may_fail(result, "ray_error"):  # a busy machine can miss Ray's start-up deadline
                result["ray"] = asdict(measure_ray_overhead(encoder, corpus.root, corpus.count, warmup.root, work_dir,
                                                            args.batch_size, args.workers))
    if "duplicates" in sections:
        result["duplicates"] = _duplicates(args)
    if "parity" in sections:
        result["parity"] = _parity(args)
    result.update(run_ann(args))
    result["machine"]["load_avg_end"] = load_average()
    return result


def _relevance_section(args: argparse.Namespace, work_dir: Path) -> dict:
    """Issue 22's relevance numbers on the embedded model's world, and a model without captions (random weights)."""
    embedded = load_encoder(ModelSpec(EMBEDDED_MODEL, None, "fp32", args.device), threads=args.threads)
    other = args.relevance_no_captions_model
    uncaptioned = None if other == "none" else load_encoder(ModelSpec(other, "none", "fp32", args.device),
                                                            threads=args.threads)
    return asdict(measure_relevance(embedded, uncaptioned, work_dir / "relevance", args.plots))


def _duplicates(args: argparse.Namespace) -> dict:
    """Issue 22's duplicate grouping: vectors against pHash on a generated corpus, with the embedded model (it knows
    the world the corpus is drawn from), then the time to group --duplicate-vectors synthetic vectors."""
    embedded = load_encoder(ModelSpec(EMBEDDED_MODEL, None, default_precision(args.device), args.device),
                            threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="clipspace-duplicates-") as scratch:
        progress(f"duplicates: generating and embedding {args.duplicate_images} images")
        section = measure_duplicates(Path(scratch), embedded, args.duplicate_images)
    if args.duplicate_vectors:
        progress(f"duplicates: grouping {args.duplicate_vectors} synthetic vectors")
        section["grouping_time"] = measure_grouping_time(args.duplicate_vectors)
    return section


def _parity(args: argparse.Namespace) -> dict:
    """Issue 20's int8 parity: the embedded model and MiniLM on their eval sets, and the run's model (unless it is
    the embedded one) for cosines, speed and memory."""
    model = str(Path(args.model).resolve()) if Path(args.model).is_file() else args.model
    large = None if model == EMBEDDED_MODEL else (model, args.pretrained)
    with tempfile.TemporaryDirectory(prefix="clipspace-parity-") as scratch:
        return measure_parity(Path(scratch), args.threads, args.parity_images, large, _service_env(args))


def _sections(args: argparse.Namespace) -> list[str]:
    """The sections this run measures: --only names them, --skip leaves some out."""
    return [section for section in (args.only or SECTIONS) if section not in args.skip]


def _scale_sections(args: argparse.Namespace, work_dir: Path) -> dict:
    """Issue 8's reindex and memory numbers, always with the embedded model: they measure the builder's work per
    file, not a model. Issue 19's keyword channel, with the embedded model at its default precision: it knows the
    generated world that the measurement's ground truth comes from."""
    sections: dict = {}
    wanted = [name for name in ("reindex", "memory", "keywords") if name in _sections(args)]
    if not wanted:
        return sections
    if "keywords" in wanted:
        embedded = load_encoder(ModelSpec(EMBEDDED_MODEL, None, default_precision(args.device), args.device),
                                threads=args.threads)
        sections["keywords"] = measure_keywords(embedded, args.keyword_items, args.keyword_queries,
                                                args.keyword_corpora)
    if not {"reindex", "memory"} & set(wanted):
        return sections
    encoder = load_encoder(ModelSpec(EMBEDDED_MODEL, None, "fp32", args.device), threads=args.threads)
    if "reindex" in wanted and args.reindex_files:
        sections["reindex"] = asdict(measure_reindex(encoder, work_dir / "reindex", args.reindex_files))
    if "memory" in wanted and len(args.memory_sizes) > 1:
        sections["memory"] = [asdict(measure_memory(work_dir / "memory", args.memory_sizes, ray=False))]
        with _ray_may_fail(sections, "memory_ray_error"):  # a busy machine can miss Ray's start-up deadline
            sections["memory"].append(asdict(measure_memory(work_dir / "memory", args.memory_sizes, ray=True)))
    return sections


@contextlib.contextmanager
def _ray_may_fail(sections: dict, key: str) -> Iterator[None]:
    """A Ray cluster that cannot start costs its own numbers, not every other number of the run."""
    try:
        yield
    except (RuntimeError, ConnectionError, ClipspaceError) as error:
        progress(f"Ray section failed: {error}")
        sections[key] = str(error)[-500:]


def run_ann(args: argparse.Namespace) -> dict:
    """The ANN sections: issue 8's probe, the HNSW efSearch sweep, the index `auto` picks at --ann-size, then
    filtered search at --filtered-size."""
    result: dict = {}
    if args.ann_probe_size:
        probe = ClusteredSpec(centres=2000, cosine_spread=0, size_sigma=0, spectrum_decay=0, shared_direction=0)
        result["ann_probe"] = measure_hnsw_ef(args.ann_probe_size, args.ann_dim, args.ann_queries, args.k,
                                              args.ann_cache, probe)
        result["ann_hnsw"] = measure_hnsw_ef(args.ann_probe_size, args.ann_dim, args.ann_queries, args.k,
                                             args.ann_cache, ClusteredSpec(centres=args.ann_probe_size // 50))
    if args.ann_size:
        result["ann"] = asdict(measure_ann(args.ann_size, args.ann_dim, args.ann_queries, args.k, args.ann_cache))
    if args.filtered_size:
        result["filtered"] = measure_filtered(args.filtered_size, args.ann_dim, args.filtered_kind, SELECTIVITIES,
                                              args.ann_queries, args.k, args.ann_cache)
    return result


def _with_the_embedded_model(encoder: DualEncoder, args: argparse.Namespace) -> list[DualEncoder]:
    """The run's model and the embedded one (issue 20 has a memory goal for each), in fp32."""
    embedded = load_encoder(ModelSpec(EMBEDDED_MODEL, None, "fp32", args.device), threads=args.threads)
    return [encoder] if embedded.fingerprint == encoder.fingerprint else [encoder, embedded]


def _service_env(args: argparse.Namespace) -> dict[str, str]:
    """The service must run the model as this process does, or the HTTP / bare ratio compares unlike things."""
    env = {"CLIPSPACE_DEVICE": args.device}
    if args.threads:
        env["CLIPSPACE_THREADS"] = str(args.threads)
    return env


def _builder_args(args: argparse.Namespace) -> list[str]:
    """The builder's flags for this machine: its device and threads, as the service is given them."""
    return ["--device", args.device, *(["--threads", str(args.threads)] if args.threads else [])]


def _model_identity(encoder: DualEncoder) -> dict:
    spec = encoder.spec
    return {"model": spec.model, "pretrained": spec.pretrained, "precision": spec.precision, "device": spec.device,
            "dim": encoder.dim, "image_size": encoder.image_size, "fingerprint": encoder.fingerprint}


if __name__ == "__main__":
    sys.exit(main())
