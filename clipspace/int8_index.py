"""An index embedded in int8 (`python -m index_builder --precision int8`), for CPUs without bf16: its query tower.

The builder embeds with the int8 copy of the model's verified ONNX export (clipspace.onnx_int8), kept beside the
index in INDEX_DIR/runtimes/; the manifest says `int8`, since the same_model rule counts precision. The service
answers such an index's queries with that same copy, whatever CLIPSPACE_RUNTIME says, as it runs a bf16 index in
bf16: the one rule stays strict, so fp32 queries never meet int8 vectors silently (docs/decisions.md, "An int8
index"). The copy records the fp32 export's identity (its probes are fp32's vectors); an encoder opened here
answers the index's identity instead, with precision int8. Free of torch: the service on it never imports torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clipspace.errors import RuntimeUnavailable
from clipspace.identity import INT8, ModelIdentity, ModelSpec
from clipspace.onnx_towers import OnnxEncoder
from clipspace.runtimes import ONNX_INT8


def as_int8_index(encoder: OnnxEncoder) -> OnnxEncoder:
    """The int8 copy `encoder` answering as the model of an int8 index: its identity's precision is int8."""
    identity = encoder.identity.model_copy(update={"precision": INT8})
    encoder.record = encoder.record.model_copy(update={"identity": identity})
    encoder.runtime = ONNX_INT8
    return encoder


def open_int8_index(spec: ModelSpec, wanted: ModelIdentity, index_dir: Path, threads: int | None) -> OnnxEncoder:
    """The int8 copy that embedded the index at `index_dir`, verified; RuntimeUnavailable where it cannot serve."""
    from clipspace.onnx_int8 import int8_folder, open_int8

    folder = int8_folder(index_dir, wanted.fingerprint)
    if not folder.is_dir():
        raise RuntimeUnavailable(f"the index was built in int8, and its int8 towers are missing ({folder}): build "
                                 "it again with `python -m index_builder --precision int8`")
    if importlib.util.find_spec("onnxruntime") is None:
        raise RuntimeUnavailable("the index was built in int8, whose towers run on ONNX Runtime: pip install "
                                 "'clipspace[onnx]'")
    return as_int8_index(open_int8(folder, spec, threads, every_probe=False))  # a start: the short probes
