"""What the frozen dual encoder hands the matchers: patch tokens, text token states, pooled embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from PIL import Image

from clipspace.encoder import DualEncoder

# ModifiedResNet's blocks in forward_intermediates: stem, layer1..layer4; its tokens come from layer3
RESNET_TOKEN_STAGE = 3
RESNET_LAST_STAGE = 4


@dataclass(frozen=True)
class ImageTokens:
    patches: torch.Tensor  # (n, 1 + patches, image width): a summary token first, after a final norm
    pooled: torch.Tensor  # (n, dim): the normalised image embedding, as the index stores it


@dataclass(frozen=True)
class TextTokens:
    states: torch.Tensor  # (n, length, text width): every token after the tower's final norm
    mask: torch.Tensor  # (n, length) bool: True for real tokens, False for padding
    pooled: torch.Tensor  # (n, dim): the normalised text embedding


def image_tokens(encoder: DualEncoder, pixels: torch.Tensor) -> ImageTokens:
    """Run the image tower once on preprocessed pixels and keep both its tokens and its embedding.

    A ViT gives its class token and patch tokens after its final norm. A convolutional tower (open_clip's
    ModifiedResNet) gives the feature map of its last-but-one stage: each cell becomes a token,
    layer-normalised over channels so that it reads like a ViT token, and their mean stands in for the class
    token. Not the last stage: at 64 px its 2x2 cells put two objects in one cell too often for the matcher
    to tell which colour goes with which shape (docs/decisions.md).
    """
    model = encoder.model
    pixels = pixels.to(encoder.spec.device, next(model.parameters()).dtype)
    with torch.inference_mode():
        if isinstance(model.visual, ModifiedResNet):
            # the last stage asked for too: open_clip pools whatever stage it stopped at
            out = model.forward_intermediates(image=pixels, image_indices=[RESNET_TOKEN_STAGE, RESNET_LAST_STAGE],
                                              image_output_fmt="NCHW")
            cells = out["image_intermediates"][0].flatten(2).transpose(1, 2).float()
            cells = F.layer_norm(cells, cells.shape[-1:])
            patches = torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
        else:
            out = model.forward_intermediates(image=pixels, image_indices=1, normalize_intermediates=True,
                                              image_output_fmt="NLC", image_output_extra_tokens=True)
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
