"""int8 vs fp32 ONNX towers, one process: cosines on the probes and on 200 world captions and images, the bare
text call's p50 (alternating single-query calls), the graphs' size on disk, and each service's RSS after 5 text and
3 image queries on an index of 32 world pictures (CLIPSPACE_RUNTIME=onnx, then onnx-int8). Run:
HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/int8_parity.py [--model ViT-B-32 --pretrained none]"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.latency import QUIET, READY_TIMEOUT_S
from clipspace.align import world
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.onnx_export import export_towers
from clipspace.onnx_int8 import int8_towers
from clipspace.onnx_towers import PROBE_TEXTS, probe_images
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import launched


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> None:
    torch_encoder = load_encoder(ModelSpec(args.model, pretrained=args.pretrained, precision="fp32"))
    scenes = list(world.generate_scenes(200, 7, "all"))
    (work / "images").mkdir()
    for number, scene in enumerate(scenes[:32]):
        world.render_scene(scene, 128).save(work / "images" / f"{number:02d}.png")
    index = work / "index"
    build_index(BuildOptions(images=work / "images", index=index, progress=False), torch_encoder)
    fp32 = export_towers(torch_encoder, index, threads=2)
    int8 = int8_towers(fp32, index, threads=2)
    texts = list(PROBE_TEXTS) + [world.canonical_caption(scene) for scene in scenes]
    images = probe_images() + [world.render_scene(scene, 128) for scene in scenes]
    cosines = {"text": np.sum(fp32.embed_texts(texts) * int8.embed_texts(texts), axis=1),
               "image": np.sum(fp32.embed_images(images) * int8.embed_images(images), axis=1)}
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for query in range(args.queries):
        for name, encoder in (("fp32", fp32), ("int8", int8)) if query % 2 else (("int8", int8), ("fp32", fp32)):
            start = time.perf_counter()
            encoder.embed_texts([texts[query % len(texts)]])
            times[name].append(time.perf_counter() - start)
    p50 = {name: statistics.median(values) * 1000 for name, values in times.items()}
    size = {name: sum(f.stat().st_size for f in encoder.folder.iterdir()) / 2**20
            for name, encoder in (("fp32", fp32), ("int8", int8))}
    rss = {runtime: _service_rss(index, runtime, work) for runtime in ("onnx", "onnx-int8")}
    agreement = {f"{kind}_cosine": {"mean": round(float(c.mean()), 5), "worst": round(float(c.min()), 5)}
                 for kind, c in cosines.items()}
    print(json.dumps({"model": args.model, "service_rss_mb": rss, **agreement,
                      "text_p50_ms": {k: round(v, 2) for k, v in p50.items()},
                      "ratio_int8_over_fp32_text_p50": round(p50["int8"] / p50["fp32"], 3),
                      "folder_mb": {k: round(v, 1) for k, v in size.items()}}))


def _service_rss(index: Path, runtime: str, work: Path) -> dict[str, float]:
    env = {"CLIPSPACE_INDEX_DIR": str(index), "CLIPSPACE_RUNTIME": runtime, "CLIPSPACE_THREADS": "2",
           "HF_HUB_OFFLINE": "1"}
    with launched(env, work / f"{runtime}.log", uvicorn_args=QUIET) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        with httpx.Client(base_url=service.url, timeout=60) as client:
            assert client.get("/info").json()["runtime"]["name"] == runtime
            for query in ("a red circle", "two blue squares", "a photo", "a green triangle", "猫"):
                client.post("/search/text", json={"text": query, "k": 10}).raise_for_status()
            for number in range(3):
                data = (work / "images" / f"{number:02d}.png").read_bytes()
                client.post("/search/image", files={"file": ("q.png", data, "image/png")}).raise_for_status()
        return service.memory_mb()


if __name__ == "__main__":
    main()
