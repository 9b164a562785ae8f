"""The builder's image tower on OpenVINO in bf16: torch's bf16 vectors, made faster on CPUs with AVX512-BF16.

Measured on the 2-vCPU EPYC (AVX512-BF16, no AMX), ViT-B-32 bf16, batch 64, interleaved with torch's eager path in
one run (`python -m benchmarks --only roofline`; docs/decisions.md, "Precision"): OpenVINO with
INFERENCE_PRECISION_HINT=bf16 fuses what eager torch runs as separate kernels (layer norms, GELU, attention, bias
adds) and was the fastest candidate (1.47x eager), ahead of inductor with frozen weights and oneDNN graph fusion.

The model is converted once per model fingerprint and precision (torch.export, then OpenVINO's converter: 30-60 s
for ViT-B-32 on the loaded 2 cores) into `INDEX/runtimes/openvino-<precision>-<fingerprint>/`, written
crash-safely and verified against torch's own vectors on the probe images (cosine >= MIN_COSINE: an index's vectors
do not depend on which path made them, so its manifest records the model and precision as before); later builds
only compile the saved IR (~1 s). Anything that fails here (no openvino, a model torch.export cannot trace, a
refused conversion) is logged and the build runs on torch: never a failed build.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipspace.encoder import DualEncoder, cpu_has_fast_bf16
from clipspace.index.publish import publish_folder
from clipspace.onnx_towers import probe_images, runtime_folder

log = logging.getLogger(__name__)

OPENVINO = "openvino"
IMAGE_RUNTIME_CHOICES = ("auto", "torch", OPENVINO)
MODEL_FILE = "image.xml"  # and its weights, image.bin
MIN_COSINE = 0.999  # against torch's vectors of the same precision; bf16 itself is ~0.9999 from fp32
MAX_BATCH = 4096  # the batch dimension is dynamic up to this
# auto converts for folders with at least this many images: the conversion (60 s once, contended) costs what OpenVINO
# saves on ~1,000 ViT-B-32 images (5.45 -> 8.04 img/s, docs/lab-notes.md); after that it is cached for every build
PAYBACK_IMAGES = 1000


class OpenVinoImageEncoder(DualEncoder):
    """A `DualEncoder` whose images run on a compiled OpenVINO model; texts, preprocessing and identity stay torch's."""

    image_runtime = OPENVINO

    def __init__(self, encoder: DualEncoder, compiled: Any) -> None:
        self.__dict__.update(encoder.__dict__)
        self._request = compiled.create_infer_request()

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self._request.infer({0: pixels.float().numpy()})[0]
        return torch.from_numpy(np.array(features, dtype=np.float32))


def openvino_folder(index_dir: Path, encoder: DualEncoder) -> Path:
    """Where the converted image tower of the model with these weights lives, beside the ONNX export; per precision,
    as the weights saved are the model's own (bf16 values in a bf16 model)."""
    return runtime_folder(index_dir, f"{OPENVINO}-{encoder.spec.precision}", encoder.fingerprint)


def wants_openvino(encoder: DualEncoder, choice: str) -> bool:
    """`auto` picks OpenVINO for a bf16 build on a CPU with native bf16 (where it measured faster); `openvino` asks
    for it on any CPU build."""
    if choice == "torch" or not encoder.spec.device.startswith("cpu"):
        return False
    return choice == OPENVINO or (encoder.spec.precision == "bf16" and cpu_has_fast_bf16())


def builder_encoder(encoder: DualEncoder, index_dir: Path, choice: str = "auto", threads: int | None = None,
                    large_build: bool = True) -> DualEncoder:
    """The encoder the builder should embed images with: OpenVINO's where `choice` wants it and it converts and
    verifies, else `encoder` itself, with the reason logged. `auto` converts only for a `large_build` (where the
    one-off conversion pays back) or where the converted tower is already cached beside the index."""
    if not wants_openvino(encoder, choice):
        return encoder
    if choice == "auto" and not large_build and not (openvino_folder(index_dir, encoder) / MODEL_FILE).is_file():
        log.info("images embedded on torch: too few to pay back the OpenVINO conversion")
        return encoder
    try:
        return openvino_encoder(encoder, index_dir, threads)
    except Exception as error:  # any failure of an optional runtime means: embed on torch
        log.warning("images embedded on torch, not OpenVINO: %s: %s", type(error).__name__, error)
        return encoder


def openvino_encoder(encoder: DualEncoder, index_dir: Path, threads: int | None = None) -> OpenVinoImageEncoder:
    """Compile the saved IR (converting and verifying it first if there is none); raises where that fails."""
    import openvino

    folder = openvino_folder(index_dir, encoder)
    verified: list[Any] = []  # a conversion made now is compiled and checked once, in staging, and kept
    if not (folder / MODEL_FILE).is_file():
        started = time.perf_counter()
        publish_folder(folder, lambda staging: _convert(encoder, staging),
                       lambda staging: verified.append(_check(encoder, _compile(openvino, staging, encoder, threads))))
        log.info("image tower converted to OpenVINO in %.1f s: %s", time.perf_counter() - started, folder)
    started = time.perf_counter()
    try:
        compiled = verified[0] if verified else _check(encoder, _compile(openvino, folder, encoder, threads))
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)  # unreadable or refused (made by another OpenVINO): made again
        raise
    log.info("images embedded on OpenVINO (%s, compiled in %.1f s)", _precision(encoder), time.perf_counter() - started)
    return OpenVinoImageEncoder(encoder, compiled)


def _convert(encoder: DualEncoder, staging: Path) -> None:
    """torch.export of the image tower in fp32 (its weights are the bf16 values when the model is bf16: nothing is
    rounded twice), a dynamic batch, then OpenVINO's converter; its inference precision is set when compiling."""
    import openvino

    visual = copy.deepcopy(encoder.model.visual).float().eval()
    size = encoder.image_size
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        program = torch.export.export(visual, (example,), dynamic_shapes=(
            {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},))
        converted = openvino.convert_model(program)
    openvino.save_model(converted, staging / MODEL_FILE, compress_to_fp16=False)


def _compile(openvino: Any, folder: Path, encoder: DualEncoder, threads: int | None) -> Any:
    config = {"INFERENCE_PRECISION_HINT": _precision(encoder), "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    return openvino.Core().compile_model(openvino.Core().read_model(folder / MODEL_FILE), "CPU", config)


def _precision(encoder: DualEncoder) -> str:
    return "bf16" if encoder.spec.precision == "bf16" else "f32"


def _check(encoder: DualEncoder, compiled: Any) -> Any:
    """The compiled model, if its vectors of the probe images agree with torch's; ValueError if they do not."""
    pixels = torch.stack([encoder.preprocess(image) for image in probe_images()])
    expected = encoder.embed_pixels(pixels)
    found = OpenVinoImageEncoder(encoder, compiled).embed_pixels(pixels)
    cosine = float(np.einsum("ij,ij->i", expected, found).min())
    if not cosine >= MIN_COSINE:
        raise ValueError(f"OpenVINO's image vectors differ from torch's (worst cosine {cosine:.5f} < {MIN_COSINE})")
    return compiled
