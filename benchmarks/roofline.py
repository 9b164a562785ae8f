"""The bf16 image tower against its roofline: every CPU inference candidate on one batch, then the builder end to end.

The roofline is a bf16 matmul loop doing the image tower's linear layers at their own shapes ([B*tokens, width] x
[width, 3*width], [width, width], [width, mlp], [mlp, width], once per block), as `F.linear` (nn.Linear's kernel);
its GFLOP/s divided by the tower's FLOPs per image (every linear, the attention products and the patch
convolution) is the img/s no runtime can beat on these kernels. Candidates and roofline are timed in rounds,
alternating, because the machine is shared: each candidate's number is its median over rounds, its ratio taken
against the roofline of the same rounds. Absolute numbers on a contended machine are pessimistic; ratios hold better.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.builder import _preprocessed_batch
from benchmarks.corpus import Corpus
from benchmarks.report import progress
from clipspace.encoder import DualEncoder, load_encoder
from clipspace.openvino_images import openvino_encoder
from index_builder.build import build_index
from index_builder.options import BuildOptions

MIN_COSINE = 0.99  # a candidate's mean cosine to fp32 torch, to count at all
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CandidateResult:
    name: str
    one_off_s: float | None = None  # compile / convert / export, once per model
    per_s: list[float] | None = None  # one per round
    ratio_to_roofline: float | None = None  # median over rounds of per_s / that round's roofline
    cosine_fp32_mean: float | None = None
    cosine_fp32_min: float | None = None
    faithful: bool | None = None
    error: str | None = None


def tower_flops(model: torch.nn.Module) -> tuple[float, list[tuple[int, int]], int, int]:
    """FLOPs per image of an open_clip ViT image tower, its linear shapes (in, out) per block, block count, tokens."""
    visual = model.visual
    width, patch = visual.conv1.weight.shape[0], visual.conv1.weight.shape[-1]
    grid = visual.grid_size[0] * visual.grid_size[1]
    tokens = grid + 1
    blocks = visual.transformer.resblocks
    mlp = blocks[0].mlp.c_fc.out_features
    linears = [(width, 3 * width), (width, width), (width, mlp), (mlp, width)]
    per_block = sum(2 * tokens * fan_in * fan_out for fan_in, fan_out in linears) + 2 * 2 * tokens * tokens * width
    patches = 2 * grid * 3 * patch * patch * width
    projection = 2 * width * (visual.proj.shape[1] if visual.proj is not None else 0)
    return float(per_block * len(blocks) + patches + projection), linears, len(blocks), tokens


class Roofline:
    """The matmul loop for one batch: `per_s()` times one pass and answers it as images per second."""

    def __init__(self, model: torch.nn.Module, batch: int) -> None:
        self.flops_per_image, linears, self.blocks, tokens = tower_flops(model)
        self.batch = batch
        self.operands = [(torch.randn(batch * tokens, fan_in).bfloat16(), torch.randn(fan_out, fan_in).bfloat16())
                         for fan_in, fan_out in linears]
        self.loop_flops = self.blocks * sum(2 * x.shape[0] * x.shape[1] * w.shape[0] for x, w in self.operands)

    def seconds(self) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for _ in range(self.blocks):
                for x, weight in self.operands:
                    F.linear(x, weight)
        return time.perf_counter() - started

    def per_s(self) -> tuple[float, float]:
        """(img/s-equivalent, GFLOP/s) of one pass."""
        gflops = self.loop_flops / self.seconds() / 1e9
        return gflops * 1e9 / self.flops_per_image, gflops


def eager(encoder: DualEncoder) -> tuple[Forward, float]:
    return lambda pixels: torch.from_numpy(encoder.embed_pixels(pixels)), 0.0


def inductor(encoder: DualEncoder, pixels: torch.Tensor, autocast: bool) -> tuple[Forward, float]:
    """torch.compile (inductor) with frozen weights: bf16 weights, or fp32 weights under bf16 autocast."""
    import torch._inductor.config as inductor_config

    visual = copy.deepcopy(encoder.model.visual).eval()
    visual = visual.float() if autocast else visual.bfloat16()
    compiled = torch.compile(visual)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _autocast(autocast):
            return compiled(batch if autocast else batch.bfloat16()).float()

    started = time.perf_counter()
    with inductor_config.patch(freezing=True):
        forward(pixels)
    return forward, time.perf_counter() - started


def onednn_graph(encoder: DualEncoder, pixels: torch.Tensor) -> tuple[Forward, float]:
    """TorchScript trace + freeze with oneDNN graph fusion, bf16 through autocast (its documented bf16 route)."""
    visual = copy.deepcopy(encoder.model.visual).float().eval()
    started = time.perf_counter()
    with _onednn_fusion(), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        traced = torch.jit.freeze(torch.jit.trace(visual, pixels, check_trace=False))
        traced(pixels)
        traced(pixels)  # the profiling runs, where the fusion groups are made

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _onednn_fusion(), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            return traced(batch).float()

    return forward, time.perf_counter() - started


def openvino(encoder: DualEncoder, work_dir: Path) -> tuple[Forward, float]:
    started = time.perf_counter()
    converted = openvino_encoder(encoder, work_dir)
    return converted._encode_pixels, time.perf_counter() - started


def onnx_runtime(fp32: DualEncoder, work_dir: Path, threads: int) -> tuple[Forward, float]:
    """The fp32 ONNX export of clipspace.onnx_export on ONNX Runtime's CPU provider (which has no bf16 GEMM on x86:
    its only bf16 fast-math option, `mlas.enable_gemm_fastmath_arm64_bfloat16`, is for ARM)."""
    import onnxruntime

    from clipspace.onnx_export import _export_graphs
    from clipspace.onnx_towers import IMAGE_FILE

    started = time.perf_counter()
    _export_graphs(fp32, work_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(work_dir / IMAGE_FILE), options, providers=["CPUExecutionProvider"])
    return lambda pixels: torch.from_numpy(session.run(None, {"pixels": pixels.numpy()})[0]), \
        time.perf_counter() - started


def measure_roofline(encoder: DualEncoder, corpus: Corpus, warmup: Corpus, work_dir: Path, batch_size: int,
                     workers: int, rounds: int, builds: int) -> dict:
    """Section `roofline`: the candidates' forward passes against the roofline, then the builder with eager torch and
    with OpenVINO (the winner), alternating, each as a fraction of the roofline timed between its builds."""
    if encoder.spec.precision != "bf16":
        raise RuntimeError("the roofline section measures the bf16 path: run it with --precision bf16")
    pixels = _preprocessed_batch(encoder, corpus, batch_size)
    fp32 = load_encoder(replace(encoder.spec, precision="fp32"), threads=torch.get_num_threads())
    reference = fp32.embed_pixels(pixels)
    roofline = Roofline(encoder.model, batch_size)
    makers: dict[str, Callable[[], tuple[Forward, float]]] = {
        "torch eager bf16 (today)": lambda: eager(encoder),
        "inductor frozen, bf16 weights": lambda: inductor(encoder, pixels, autocast=False),
        "inductor frozen, bf16 autocast": lambda: inductor(encoder, pixels, autocast=True),
        "oneDNN graph (jit trace+freeze, autocast)": lambda: onednn_graph(encoder, pixels),
        "OpenVINO bf16": lambda: openvino(encoder, Path(tempfile.mkdtemp(prefix="ov-", dir=work_dir))),
        "ONNX Runtime fp32": lambda: onnx_runtime(fp32, Path(tempfile.mkdtemp(prefix="ort-", dir=work_dir)),
                                                  torch.get_num_threads()),
    }
    results, forwards = {}, {}
    for name, make in makers.items():
        progress(f"roofline: preparing {name}")
        result = results[name] = CandidateResult(name)
        try:
            forward, result.one_off_s = make()
            cosines = _cosines(reference, forward(pixels))
        except Exception as error:  # a candidate that fails is a result, not the end of the run
            result.error = f"{type(error).__name__}: {str(error)[:300]}"
            continue
        result.one_off_s = round(result.one_off_s, 2)
        result.cosine_fp32_mean = round(float(cosines.mean()), 6)
        result.cosine_fp32_min = round(float(cosines.min()), 6)
        result.faithful = result.cosine_fp32_mean >= MIN_COSINE
        forwards[name], result.per_s = forward, []
    roofline_per_s, gflops = [], []
    ratios: dict[str, list[float]] = {name: [] for name in forwards}
    for index in range(rounds):
        progress(f"roofline: round {index + 1}/{rounds}")
        roofline.per_s()  # warm
        for name, forward in forwards.items():
            top, flops = roofline.per_s()
            roofline_per_s.append(top)
            gflops.append(flops)
            started = time.perf_counter()
            forward(pixels)
            per_s = batch_size / (time.perf_counter() - started)
            results[name].per_s.append(round(per_s, 2))
            ratios[name].append(per_s / top)
    for name, values in ratios.items():
        results[name].ratio_to_roofline = round(statistics.median(values), 3)
    return {"batch_size": batch_size, "flops_per_image": roofline.flops_per_image,
            "roofline_per_s": round(statistics.median(roofline_per_s), 2),
            "roofline_gflops": round(statistics.median(gflops), 1), "rounds": rounds,
            "candidates": [asdict(result) for result in results.values()],
            "end_to_end": _end_to_end(encoder, corpus, warmup, work_dir, batch_size, workers, builds, roofline)}


def _end_to_end(encoder: DualEncoder, corpus: Corpus, warmup: Corpus, work_dir: Path, batch_size: int,
                workers: int, builds: int, roofline: Roofline) -> dict:
    """The real builder on the corpus, eager torch and OpenVINO alternating, the roofline timed beside each build."""
    converted = openvino_encoder(encoder, work_dir / "e2e-index")  # its conversion is cached beside the index
    runs: dict[str, list[dict]] = {"torch eager bf16 (today)": [], "OpenVINO bf16": []}
    for number, embedder in enumerate((encoder, converted)):
        build_index(BuildOptions(images=warmup.root, index=work_dir / f"warm-{number}", batch_size=batch_size,
                                 workers=workers, progress=False), embedder)
    vectors = {}
    for repeat in range(builds):
        for name, embedder in zip(runs, (encoder, converted), strict=True):
            progress(f"roofline: build {repeat + 1}/{builds} with {name} ({corpus.count} images)")
            top = statistics.median(roofline.per_s()[0] for _ in range(3))
            index = Path(tempfile.mkdtemp(prefix="e2e-", dir=work_dir))
            started = time.perf_counter()
            report = build_index(BuildOptions(images=corpus.root, index=index, batch_size=batch_size,
                                              workers=workers, progress=False), embedder)
            per_s = corpus.count / (time.perf_counter() - started)
            if report.added != corpus.count:
                raise RuntimeError(f"the build embedded {report.added} of {corpus.count} images")
            runs[name].append({"per_s": round(per_s, 2), "roofline_per_s": round(top, 2),
                               "fraction_of_roofline": round(per_s / top, 3)})
            vectors.setdefault(name, _vectors(index))
    cosines = np.einsum("ij,ij->i", *vectors.values())
    return {"builds": runs, "cosine_to_today_mean": round(float(cosines.mean()), 6),
            "cosine_to_today_min": round(float(cosines.min()), 6),
            "median_fraction_of_roofline": {name: statistics.median(run["fraction_of_roofline"] for run in values)
                                            for name, values in runs.items()}}


def _vectors(index: Path) -> np.ndarray:
    from clipspace.index.publish import open_current

    version = open_current(index)
    try:
        rows = {record.path: row for record, row, _ in version.items()}
        stored = version.image_vectors()
        return np.stack([stored[rows[path]] for path in sorted(rows)]).astype(np.float64)
    finally:
        version.close()


def _cosines(reference: np.ndarray, features: torch.Tensor) -> np.ndarray:
    found = F.normalize(features.float(), dim=-1).numpy()
    return np.einsum("ij,ij->i", reference.astype(np.float64), found.astype(np.float64))


def _autocast(enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def _onednn_fusion():
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(False)


def render_roofline(section: dict) -> list[str]:
    """The section's table: every candidate's img/s, fraction of the roofline, cosine to fp32 and one-off cost."""
    lines = [f"bf16 roofline, batch {section['batch_size']}: {section['roofline_per_s']} img/s-equivalent "
             f"({section['roofline_gflops']} GFLOP/s, {section['flops_per_image'] / 1e9:.2f} GFLOP/img), "
             f"median of {section['rounds']} interleaved rounds (contended machine: read the ratios)",
             f"  {'candidate':<44}{'img/s':>8}{'/roof':>8}{'cos fp32':>10}{'one-off s':>11}"]
    for entry in section["candidates"]:
        if entry["error"]:
            lines.append(f"  {entry['name']:<44}failed: {entry['error'][:80]}")
            continue
        lines.append(f"  {entry['name']:<44}{statistics.median(entry['per_s']):>8.2f}"
                     f"{entry['ratio_to_roofline']:>8.3f}{entry['cosine_fp32_mean']:>10.5f}{entry['one_off_s']:>11.1f}")
    end = section["end_to_end"]
    for name, runs in end["builds"].items():
        lines.append(f"  builder end to end, {name:<26} " + ", ".join(
            f"{run['per_s']} img/s = {run['fraction_of_roofline']}" for run in runs) + " of the roofline")
    lines.append(f"  OpenVINO's vectors vs today's: cosine mean {end['cosine_to_today_mean']}, "
                 f"min {end['cosine_to_today_min']}")
    return lines
