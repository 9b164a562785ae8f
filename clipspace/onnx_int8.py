"""An int8 copy of a verified fp32 ONNX export, for CPUs where int8 kernels beat fp32 (no bf16): made once, proved.

ONNX Runtime's dynamic quantisation stores the MatMul weights in int8 (per tensor, the full int8 range) and
quantises activations at run time; the copy lives beside the fp32 export in INDEX_DIR/runtimes/onnx-int8-<digest>/,
written like it (staged, fsynced, reopened and verified, renamed into place) with the same runtime.json, so it is
verified against the same probe vectors: torch's, which the fp32 export reproduces at a cosine ≥ 0.9999.
Quantisation moves vectors, so its bound is looser than fp32's and justified by measurement (below); a copy below it
is refused (ExportRefused) and the caller serves the fp32 export instead, saying why.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from clipspace.errors import ExportRefused, RuntimeUnavailable
from clipspace.identity import ModelSpec
from clipspace.index.publish import publish_folder
from clipspace.onnx_towers import (
    IMAGE_FILE,
    RECORD_FILE,
    RUNTIMES_DIR,
    TEXT_FILE,
    VOCAB_FILE,
    OnnxEncoder,
    read_record,
)
from clipspace.runtimes import ONNX_INT8

log = logging.getLogger(__name__)

# Measured on the probes (docs/lab-notes.md, "int8 towers"): the embedded model's int8 copy gives a mean cosine of
# 0.9999 and a worst of 0.997, ViT-B-32's 0.999 / 0.998; one weight tensor reversed drops far below.
MIN_MEAN_COSINE, MIN_WORST_COSINE = 0.99, 0.98
OP_TYPES = ["MatMul"]  # the towers' linear layers and attention projections: where the weights and the time are


def int8_folder(index_dir: Path, fingerprint: str) -> Path:
    return Path(index_dir) / RUNTIMES_DIR / f"{ONNX_INT8}-{fingerprint.split(':')[-1]}"


def int8_towers(fp32: OnnxEncoder, index_dir: Path, threads: int | None = None) -> OnnxEncoder:
    """The int8 copy of the verified fp32 export `fp32`, made now if there is none or the one there is refused;
    ExportRefused where the quantised towers stray past the bounds, RuntimeUnavailable where they cannot be made."""
    folder = int8_folder(index_dir, fp32.fingerprint)
    if folder.is_dir():
        try:
            return open_int8(folder, fp32.spec, threads)
        except ExportRefused as error:
            log.warning("making the int8 copy again: %s", error)
            shutil.rmtree(folder)

    def fill(staging: Path) -> None:
        for name in (TEXT_FILE, IMAGE_FILE):
            quantise(fp32.folder / name, staging / name)
        for name in (VOCAB_FILE, RECORD_FILE):
            shutil.copyfile(fp32.folder / name, staging / name)

    publish_folder(folder, fill, lambda staging: open_int8(staging, fp32.spec, threads))
    return open_int8(folder, fp32.spec, threads)


def open_int8(folder: Path, spec: ModelSpec, threads: int | None = None, every_probe: bool = True) -> OnnxEncoder:
    """The int8 copy at `folder`, after proving its probe vectors stay within the bounds (else ExportRefused): every
    probe, or those a start embeds again (onnx_towers.START_TEXTS)."""
    record = read_record(folder)
    try:
        encoder = OnnxEncoder(spec, folder, record, threads)
        cosines = encoder.probe_cosines(every_probe)
    except Exception as error:  # onnxruntime raises its own types for a damaged graph
        raise ExportRefused(f"the int8 copy at {folder} does not run: {type(error).__name__}: {error}") from error
    mean, worst = float(cosines.mean()), float(cosines.min())
    if not (mean >= MIN_MEAN_COSINE and worst >= MIN_WORST_COSINE):
        raise ExportRefused(f"the int8 copy at {folder} strays from the fp32 towers: probe cosines mean {mean:.5f}, "
                            f"worst {worst:.5f} (bounds {MIN_MEAN_COSINE} and {MIN_WORST_COSINE})")
    log.info("int8 copy %s verified (probe cosines mean %.5f, worst %.5f)", folder, mean, worst)
    encoder.verified_cosine = worst
    return encoder


def quantise(source: Path, target: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise RuntimeUnavailable(f"ONNX Runtime's quantisation tools are not installed ({error})") from error
    try:
        quantize_dynamic(source, target, op_types_to_quantize=OP_TYPES, per_channel=False, reduce_range=False,
                         weight_type=QuantType.QInt8, use_external_data_format=True)  # mapped, as the fp32 export's
    except Exception as error:  # the quantiser raises many types for a graph it cannot rewrite
        raise RuntimeUnavailable(f"{source.name} does not quantise: {type(error).__name__}: {error}") from error
