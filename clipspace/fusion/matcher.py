"""The two fusion scorers over a frozen dual encoder, and their files (tied to that encoder's fingerprint).

- `CrossAttentionMatcher`: the text's token states attend to the image's patch tokens, so "red" can be
  looked for *where the circle is*; a bag of pooled vectors cannot do that.
- `ConcatMLP`: the brief's concatenation baseline, an MLP over `[u, v, u·v, |u−v|]` of pooled embeddings.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clipspace.errors import ModelLoadError, ModelMismatch


@dataclass(frozen=True)
class MatcherConfig:
    kind: str  # "cross-attention" or "concat-mlp"
    encoder_fingerprint: str  # the dual encoder whose tokens it reads: any other one is refused
    image_width: int = 0  # width of the encoder's patch tokens (cross-attention)
    image_tokens: int = 0  # class token + patches (cross-attention: one learned position each)
    text_width: int = 0  # width of the encoder's text token states (cross-attention)
    embed_dim: int = 0  # the shared space's dimension (concat-mlp)
    width: int = 128
    heads: int = 4
    layers: int = 2
    image_pool: int = 0  # cross-attention: 0 reads every token; g pools the cell grid to g x g (+ the summary token)


class FusionBlock(nn.Module):
    """Pre-norm: text self-attention, text→image cross-attention, feed-forward; each a residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_image, self.norm_ff = (nn.LayerNorm(width) for _ in range(4))
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, text: torch.Tensor, padding: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.norm_self(text)
        text = text + self.self_attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        x, kv = self.norm_cross(text), self.norm_image(image)
        text = text + self.cross_attention(x, kv, kv, need_weights=False)[0]
        return text + self.feed_forward(self.norm_ff(text))


class CrossAttentionMatcher(nn.Module):
    """Scores (image tokens, text tokens) pairs: a learned [MATCH] token leads the text through the blocks."""

    def __init__(self, config: MatcherConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.image_in = nn.Sequential(nn.LayerNorm(config.image_width), nn.Linear(config.image_width, width))
        tokens = 1 + config.image_pool ** 2 if config.image_pool else config.image_tokens
        self.image_position = nn.Parameter(torch.zeros(tokens, width))
        self.text_in = nn.Sequential(nn.LayerNorm(config.text_width), nn.Linear(config.text_width, width))
        self.match_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.blocks = nn.ModuleList(FusionBlock(width, config.heads) for _ in range(config.layers))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def pool(self, patches: torch.Tensor) -> torch.Tensor:
        """The summary token and the cell grid averaged to image_pool x image_pool cells: the index stores every
        token (config.image_tokens), the matcher reads fewer, so pooling costs the store nothing."""
        if not self.config.image_pool:
            return patches
        side = math.isqrt(patches.shape[1] - 1)
        grid = patches[:, 1:].transpose(1, 2).reshape(len(patches), -1, side, side)
        cells = nn.functional.adaptive_avg_pool2d(grid, self.config.image_pool).flatten(2).transpose(1, 2)
        return torch.cat([patches[:, :1], cells], dim=1)

    def forward(self, patches: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                image_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n,) for n pairs: patches (n, tokens, image width), states (n, length, text width), mask.
        With `image_rows` (n,), patches holds each distinct image once and pair i reads image image_rows[i]:
        a training step scores each image with several captions, and embeds it once."""
        image = self.image_in(self.pool(patches)) + self.image_position
        if image_rows is not None:
            image = image[image_rows]
        text = torch.cat([self.match_token.expand(len(states), -1, -1), self.text_in(states)], dim=1)
        padding = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        for block in self.blocks:
            text = block(text, padding, image)
        return self.head(text[:, 0]).squeeze(-1)


class ConcatMLP(nn.Module):
    """Concatenation fusion of pooled embeddings: it sees *which* attributes, never *where* or *whose*."""

    def __init__(self, config: MatcherConfig) -> None:
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(nn.Linear(4 * config.embed_dim, 4 * config.width), nn.GELU(),
                                 nn.Linear(4 * config.width, config.width), nn.GELU(), nn.Linear(config.width, 1))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([image, text, image * text, (image - text).abs()], dim=-1)).squeeze(-1)


KINDS = {"cross-attention": CrossAttentionMatcher, "concat-mlp": ConcatMLP}


def save_scorer(model: nn.Module, path: Path, card: dict | None = None) -> Path:
    """One safetensors file: the weights, with the config (and a training card) in its metadata."""
    metadata = {"config": json.dumps(asdict(model.config)), "card": json.dumps(card or {}, ensure_ascii=False)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({name: t.detach().contiguous() for name, t in model.state_dict().items()}, tmp, metadata=metadata)
    tmp.replace(path)
    return path


def read_config(path: Path) -> MatcherConfig:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return MatcherConfig(**json.loads(handle.metadata()["config"]))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{path}: not a clipspace matcher file: {error}") from error


def load_scorer(path: Path, fingerprint: str) -> nn.Module:
    """Load a matcher or MLP for the encoder with `fingerprint`; a scorer trained for another one is refused."""
    config = read_config(path)
    if config.encoder_fingerprint != fingerprint:
        raise ModelMismatch(f"{path.name} was trained for the dual encoder with weights "
                            f"{config.encoder_fingerprint}, not for the served one ({fingerprint}); retrain it "
                            f"with `python -m clipspace.align matcher`")
    if config.kind not in KINDS:
        raise ModelLoadError(f"{path}: unknown scorer kind {config.kind!r}")
    model = KINDS[config.kind](config)
    model.load_state_dict(load_file(path))
    return model.eval()
