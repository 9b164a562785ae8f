"""What the service needs of an encoder, whichever runtime runs its towers: torch or ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clipspace.identity import ModelIdentity, ModelSpec

TORCH, ONNX, ONNX_INT8 = "torch", "onnx", "onnx-int8"
# auto: ONNX Runtime where its export of the model exists (or can be made) and verifies, else torch; onnx-int8: the
# export's int8 copy (clipspace.onnx_int8), else the fp32 export
RUNTIME_CHOICES = ("auto", TORCH, ONNX, ONNX_INT8)


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
