"""`python -m benchmarks.rerank`: what re-ranking 50 candidates adds to a query, patch tokens recomputed vs cached.

All in one process, one run, the same query texts: (a) the dual-encoder query alone (embed the text, search
the index), (b) + re-ranking its top 50 with patch tokens recomputed from the image files (decode,
preprocess, image tower, matcher), (c) + re-ranking with patch tokens read from an in-memory cache
(matcher only). Ratios against (a) are what to compare across machines.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe_machine, load_average
from benchmarks.timing import latency_summary, time_calls
from clipspace.align import world
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.fusion.matcher import MATCHER_FILE, load_scorer
from clipspace.fusion.rerank import RERANK_DEPTH, Reranker, model_folder
from clipspace.fusion.tokens import image_tokens, preprocess_images, text_tokens
from clipspace.images import load_image
from clipspace.settings import EMBEDDED_MODEL
from clipspace.store import build_faiss


def measure(model: str, scenes: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    encoder = load_encoder(ModelSpec(model))
    folder = model_folder(encoder)
    reranker = Reranker(encoder, load_scorer(folder / MATCHER_FILE, encoder.fingerprint), folder / MATCHER_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        world.write_world(Path(tmp), scenes, seed=9001, split="test")
        paths = sorted(Path(tmp).glob("*.png"))
        images = [load_image(path) for path in paths]
        vectors = encoder.embed_images(images)
        index = build_faiss(vectors, "Flat")
        cache = image_tokens(encoder, preprocess_images(encoder, images)).patches.half()
        queries = [world.canonical_caption(world.sample_scene(9002, "test", i)) for i in range(repeats + 5)]

        def query(i: int) -> tuple[np.ndarray, np.ndarray]:
            found, rows = index.search(encoder.embed_texts([queries[i]]), RERANK_DEPTH)
            return found[0], rows[0]

        def recomputed(i: int) -> np.ndarray:
            scores, rows = query(i)
            return reranker.score([queries[i]], [1.0], [load_image(paths[row], draft_size=encoder.image_size)
                                                        for row in rows], scores)

        def cached(i: int) -> np.ndarray:
            scores, rows = query(i)
            text = text_tokens(encoder, [queries[i]])
            return reranker.score_tokens(cache[rows].float(), text.states, text.mask, [1.0], scores)

        result = {"query alone": latency_summary(time_calls(query, repeats, 5)),
                  "query + rerank 50, tokens recomputed": latency_summary(time_calls(recomputed, repeats, 5)),
                  "query + rerank 50, tokens cached": latency_summary(time_calls(cached, repeats, 5))}
    base = result["query alone"]["p50_ms"]
    return {"model": model, "scenes": scenes, "threads": threads, "results": result,
            "added_p50_ms": {name: round(summary["p50_ms"] - base, 3) for name, summary in result.items()},
            "cached_bytes_per_image": int(cache[0].numel() * cache.element_size()),
            "matcher_bytes": (folder / MATCHER_FILE).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerank", description=__doc__)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a local-dir: model with a matcher beside it")
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    machine = describe_machine()
    report = {**measure(args.model, args.scenes, args.repeats, args.threads), "machine": machine,
              "load_avg_end": load_average(), "command": " ".join(["python -m benchmarks.rerank", *(argv or [])])}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
