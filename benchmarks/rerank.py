"""`python -m benchmarks.rerank`: what re-ranking 50 candidates adds to a query over HTTP, tokens cached vs recomputed.

One run builds the same world corpus twice with the real builder: once keeping the patch tokens in the index version
(the default for a model with a matcher) and once with `--no-patch-tokens`. Each index is served by its own uvicorn;
the same query texts go to `POST /search` with `rerank` off and on, one at a time. What re-ranking adds is the
difference of the p50s in the same service, so machines compare by that difference and its ratio to the query alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

from benchmarks.latency import QUIET, READY_TIMEOUT_S, REQUEST_TIMEOUT_S
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.align import world
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.index.publish import open_current
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import launched


def measure(model: str, scenes: int, repeats: int, threads: int) -> dict:
    encoder = load_encoder(ModelSpec(model))
    queries = [world.canonical_caption(world.sample_scene(9002, "test", i)) for i in range(repeats + 5)]
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        world.write_world(images, scenes, seed=9001, split="test")
        result = {}
        for name, keep in (("tokens cached", True), ("tokens recomputed", False)):
            index = Path(tmp) / name.replace(" ", "-")
            progress(f"building {scenes} scenes, patch tokens kept: {keep}")
            build_index(BuildOptions(images=images, index=index, progress=False, patch_tokens=keep), encoder)
            version = open_current(index)
            token_bytes = sum((version.path / shard.file).stat().st_size for shard in version.manifest.token_shards)
            env = {"CLIPSPACE_INDEX_DIR": str(index), "CLIPSPACE_THREADS": str(threads)}
            with launched(env, Path(tmp) / f"{name}.log", uvicorn_args=QUIET) as service, \
                    httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S) as client:
                service.wait_for("/readyz", READY_TIMEOUT_S)

                def search(i: int, rerank: bool) -> None:
                    answer = client.post("/search", json={"terms": [{"text": queries[i]}], "k": 10, "rerank": rerank})
                    answer.raise_for_status()

                progress(f"{name}: {repeats} queries with rerank off, then on")
                alone = latency_summary(time_calls(lambda i: search(i, False), repeats, 5))
                reranked = latency_summary(time_calls(lambda i: search(i, True), repeats, 5))
            result[name] = {"query alone": alone, "query + rerank 50": reranked,
                            "added_p50_ms": round(reranked["p50_ms"] - alone["p50_ms"], 3),
                            "token_bytes_per_image": token_bytes // version.count if token_bytes else 0}
    return {"model": model, "scenes": scenes, "threads": threads, "results": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerank", description=__doc__)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a local-dir: model with a matcher beside it")
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="the service's torch threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {**measure(args.model, args.scenes, args.repeats, args.threads), "machine": describe_machine(),
              "load_avg_end": load_average(), "command": " ".join(["python -m benchmarks.rerank", *(argv or [])])}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
