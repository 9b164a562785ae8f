"""`python -m benchmarks.thumbnails`: what a thumbnail costs made at build time or on first request, and what a grid
of results transfers, on photo-sized JPEGs.

Build time: the builder already decodes every image (drafted to the model's input size), so a thumbnail made
there costs only its resize and encode, for every image, whether anyone looks at it or not. On request: the
first view pays read + hash + drafted decode + resize + encode, later views read a cached file.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import hashlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.corpus import existing_corpus, generate_corpus
from benchmarks.latency import READY_TIMEOUT_S
from benchmarks.machine import load_average
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.images import load_image
from clipspace.thumbnails import THUMB_FORMAT, THUMB_QUALITY, THUMB_SIDE, ThumbnailCache
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import launched

TINY_MODEL = Path(__file__).resolve().parent.parent / "tests" / "assets" / "tiny-clip.json"
MODEL_INPUT = 224  # ViT-B-32's input side: what the builder drafts JPEGs to


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.thumbnails", description=__doc__)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--image-size", default="3000x2000")
    parser.add_argument("--corpus", type=Path, help="use this folder instead of generating JPEGs")
    parser.add_argument("--k", type=int, default=50, help="results in the grid")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thumbs-bench-") as scratch:
        scratch = Path(scratch)
        if args.corpus:
            corpus = existing_corpus(args.corpus)
        else:
            width, height = (int(side) for side in args.image_size.split("x"))
            corpus = generate_corpus(scratch / "images", args.images, (width, height))
        paths = [corpus.root / path for path in corpus.paths]
        report = {"load_avg_start": load_average(), "corpus": corpus.describe(),
                  "per_image_ms": per_image_costs(paths, scratch / "cache"),
                  "grid": grid_transfer(corpus.root, scratch / "index", args.k),
                  "load_avg_end": load_average()}
    print(json.dumps(report, indent=2))


def per_image_costs(paths: list[Path], cache_dir: Path) -> dict[str, float]:
    """Median milliseconds per image of each way to have a thumbnail, measured on the same files."""
    builder_decode, at_build, first_request, cached, sizes = [], [], [], [], []
    cache = ThumbnailCache(cache_dir)
    for path in paths:
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        started = time.perf_counter()
        decoded = load_image(data, draft_size=MODEL_INPUT)  # what the builder decodes anyway
        builder_decode.append(time.perf_counter() - started)
        started = time.perf_counter()
        image = decoded.copy()
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        image.save(io.BytesIO(), THUMB_FORMAT, quality=THUMB_QUALITY, method=4)
        at_build.append(time.perf_counter() - started)
        started = time.perf_counter()
        made = cache.get(path, sha256)
        first_request.append(time.perf_counter() - started)
        started = time.perf_counter()
        cache.get(path, sha256)
        cached.append(time.perf_counter() - started)
        sizes.append(len(made.data))

    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 2)

    return {"builder_decode_shared": median_ms(builder_decode), "build_time_extra": median_ms(at_build),
            "on_request_first": median_ms(first_request), "on_request_cached": median_ms(cached),
            "thumb_kb_mean": round(statistics.mean(sizes) / 1000, 1), "thumb_kb_max": round(max(sizes) / 1000, 1)}


def grid_transfer(images: Path, index: Path, k: int) -> dict[str, float]:
    """Bytes and seconds of one grid of k results over HTTP: the JSON answer, then every thumbnail (cold, warm)."""
    build_index(BuildOptions(images=images, index=index, progress=False),
                load_encoder(ModelSpec(str(TINY_MODEL), "none", "fp32")))
    with launched({"CLIPSPACE_INDEX_DIR": str(index)}, index.parent / "uvicorn.log") as service, \
            httpx.Client(base_url=service.url, timeout=120) as client:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        answer = client.post("/search/text", json={"text": "a photo", "k": k})
        hits = answer.json()["results"]
        timings, sizes = {}, []
        for visit in ("cold", "warm"):
            started = time.perf_counter()
            sizes = [len(client.get(f"/thumbs/{hit['id']}").content) for hit in hits]
            timings[visit] = round(time.perf_counter() - started, 3)
        full = sum((images / hit["path"]).stat().st_size for hit in hits)
    return {"results": len(hits), "json_bytes": len(answer.content), "thumb_bytes": sum(sizes),
            "total_bytes": len(answer.content) + sum(sizes), "full_images_bytes": full,
            "thumbs_cold_s": timings["cold"], "thumbs_warm_s": timings["warm"]}


if __name__ == "__main__":
    main()
