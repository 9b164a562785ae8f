"""open_clip's image preprocessing for inference, without torch: shortest side resized, centre crop, RGB, normalised.

The torch path runs open_clip's torchvision transform; a service on ONNX Runtime runs this one, which makes the
same Pillow calls (torchvision resizes and crops a PIL image with Pillow itself) and the same float32 arithmetic
in numpy. tests/test_onnx_runtime.py proves both give the same pixels; the export's probe images prove it again
for each model (clipspace.onnx_towers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def preprocess(image: Image.Image, recipe: dict[str, Any]) -> np.ndarray:
    """A (3, size, size) float32 array, as open_clip's `Resize(size) → CenterCrop → RGB → ToTensor → Normalize`.

    `recipe` holds `size`, `interpolation` (bicubic or bilinear), `mean` and `std`, read from the model's own
    transform when it was exported (clipspace.onnx_export).
    """
    size = int(recipe["size"])
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # torchvision's rounding of the long side (truncation)
    resized = image.resize((size, new_long) if width <= height else (new_long, size),
                           INTERPOLATIONS[recipe["interpolation"]])
    width, height = resized.size
    top, left = round((height - size) / 2.0), round((width - size) / 2.0)  # torchvision's centre
    cropped = resized.crop((left, top, left + size, top + size)).convert("RGB")
    pixels = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(recipe["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(recipe["std"], dtype=np.float32)[:, None, None]
    return (pixels - mean) / std
