"""`--precision int8`: the builder embeds with the int8 copy of the model's ONNX export, on ONNX Runtime.

For CPUs without native bf16, where int8 kernels beat fp32 ones. The copy is made (once per model, beside the index
in INDEX/runtimes/) by the same helpers the service uses: the fp32 export, verified against the torch towers
(clipspace.onnx_export), then its int8 copy, verified against them within the quantisation's bounds
(clipspace.onnx_int8). The builder keeps its one `Encoder` interface: the copy answers the index's identity with
precision int8 (clipspace.int8_index), and the service answers its queries with the same copy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clipspace.encoder import DualEncoder
from clipspace.errors import InvalidBuildOptions
from clipspace.int8_index import as_int8_index
from clipspace.onnx_towers import OnnxEncoder

# What exporting (torch.onnx's dynamo exporter writes through onnxscript) and quantising need: the `onnx` extra
ONNX_MODULES = ("onnxruntime", "onnxscript", "onnx")


def missing_onnx_modules() -> list[str]:
    return [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]


def check_int8_build(ray: bool, device: str) -> None:
    """Refuse `--precision int8` before any model is loaded where it cannot run (a usage error, exit 2)."""
    missing = missing_onnx_modules()
    if missing:
        raise InvalidBuildOptions(f"--precision int8 runs on ONNX Runtime, and {', '.join(missing)} is not "
                                  "installed: pip install 'clipspace[onnx]'")
    if ray:
        raise InvalidBuildOptions("--precision int8 builds locally: a Ray build runs torch (fp32 or bf16)")
    if device != "cpu":
        raise InvalidBuildOptions(f"--precision int8 runs on the CPU, not {device}")


def int8_encoder(encoder: DualEncoder, index: Path, threads: int | None) -> OnnxEncoder:
    """The int8 copy of `encoder`'s towers, made beside the index where there is none (a minute for ViT-B-32)."""
    from clipspace.onnx_export import export_towers
    from clipspace.onnx_int8 import int8_towers

    fp32 = export_towers(encoder, index, threads)
    return as_int8_index(int8_towers(fp32, index, threads))
