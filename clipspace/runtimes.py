"""What the service needs of an encoder, whichever runtime runs its towers: torch or ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clipspace.identity import ModelIdentity, ModelSpec

AUTO, TORCH, ONNX, ONNX_INT8 = "auto", "torch", "onnx", "onnx-int8"
# auto: ONNX Runtime where its export of the model exists and verifies, in int8 where the export's int8 copy is
# measured faithful and faster on this machine (clipspace.onnx_int8), else torch; onnx-int8: the export's int8 copy
# whatever its speed, else the fp32 export
RUNTIME_CHOICES = (AUTO, TORCH, ONNX, ONNX_INT8)


class Encoder(Protocol):
    """A dual encoder answering L2-normalised float32 vectors; torch's `DualEncoder` and `OnnxEncoder` are two.

    `preprocess` turns one image into its model input (a tensor or an array, whatever `embed_pixels` stacks),
    so decoding runs on any thread and the forward pass batches on the model thread.
    """

    runtime: str
    spec: ModelSpec
    fingerprint: str
    dim: int

    @property
    def image_size(self) -> int: ...

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def logit_scale(self) -> float: ...

    def preprocess(self, image: Image.Image) -> Any: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_pixels(self, pixels: Sequence[Any]) -> np.ndarray: ...
