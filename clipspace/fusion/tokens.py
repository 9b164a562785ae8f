"""What the frozen dual encoder hands the matchers: patch tokens, text token states, pooled embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from clipspace.encoder import DualEncoder


@dataclass(frozen=True)
class ImageTokens:
    patches: torch.Tensor  # (n, 1 + patches, image width): class token first, after the tower's final norm
    pooled: torch.Tensor  # (n, dim): the normalised image embedding, as the index stores it


@dataclass(frozen=True)
class TextTokens:
    states: torch.Tensor  # (n, length, text width): every token after the tower's final norm
    mask: torch.Tensor  # (n, length) bool: True for real tokens, False for padding
    pooled: torch.Tensor  # (n, dim): the normalised text embedding


def image_tokens(encoder: DualEncoder, pixels: torch.Tensor) -> ImageTokens:
    """Run the image tower once on preprocessed pixels and keep both its tokens and its embedding."""
    with torch.inference_mode():
        out = encoder.model.forward_intermediates(
            image=pixels.to(encoder.spec.device, next(encoder.model.parameters()).dtype), image_indices=1,
            normalize_intermediates=True, image_output_fmt="NLC", image_output_extra_tokens=True)
        patches = torch.cat([out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1)
        return ImageTokens(patches.float().cpu(), F.normalize(out["image_features"].float(), dim=-1).cpu())


def text_tokens(encoder: DualEncoder, texts: Sequence[str]) -> TextTokens:
    """Run the text tower once; states are cut to the longest text, so short captions cost little later."""
    ids = encoder.tokenizer(list(texts)).to(encoder.spec.device)
    with torch.inference_mode():
        out = encoder.model.forward_intermediates(text=ids, text_indices=1, normalize_intermediates=True)
    mask = ids != 0  # open_clip's tokenizers pad with 0
    length = int(mask.sum(dim=1).max())
    return TextTokens(out["text_intermediates"][-1][:, :length].float().cpu(), mask[:, :length].cpu(),
                      F.normalize(out["text_features"].float(), dim=-1).cpu())


def preprocess_images(encoder: DualEncoder, images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack([encoder.preprocess(image) for image in images])
