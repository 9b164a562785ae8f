"""Re-ranking: the dual encoder's top candidates re-scored by the cross-attention matcher of the same model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipspace.encoder import DualEncoder
from clipspace.errors import ModelLoadError, ModelMismatch
from clipspace.fusion.beside import matcher_file, no_matcher_reason
from clipspace.fusion.matcher import CrossAttentionMatcher, load_scorer
from clipspace.fusion.tokens import image_tokens, preprocess_images, text_tokens

log = logging.getLogger(__name__)

# The matcher alone tells a scene from its twin but ranks 50 near misses worse than cosine does; its logit
# plus this multiple of the cosine ranks best (text→image R@1 on the val split: 0.886 against 0.518 for
# cosine alone and 0.454 for the matcher alone; weights 5–40 tried, docs/decisions.md).
COSINE_WEIGHT = 30.0


def combined_score(logits: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """Matcher logit + COSINE_WEIGHT x cosine: higher is better, comparable among one query's candidates."""
    return logits + COSINE_WEIGHT * cosines


class Reranker:
    """A cross-attention matcher bound to the one dual encoder whose tokens it was trained on."""

    def __init__(self, encoder: DualEncoder, matcher: CrossAttentionMatcher, path: Path) -> None:
        self.encoder, self.matcher, self.path = encoder, matcher, path

    @property
    def token_shape(self) -> tuple[int, int]:
        """The (tokens, width) of the patch tokens it reads: what an index version caches for it."""
        return self.matcher.config.image_tokens, self.matcher.config.image_width

    def score(self, texts: Sequence[str], weights: Sequence[float], images: Sequence[Image.Image],
              cosines: np.ndarray) -> np.ndarray:
        """`combined_score` of every image, the weighted mean over the texts, with patch tokens recomputed
        from the images (one image-tower pass for all candidates). Blocking: run off the loop."""
        if not images:
            return np.zeros(0, dtype=np.float32)
        patches = image_tokens(self.encoder, preprocess_images(self.encoder, images)).patches
        return self.score_patches(texts, weights, patches, cosines)

    def score_patches(self, texts: Sequence[str], weights: Sequence[float], patches: torch.Tensor | np.ndarray,
                      cosines: np.ndarray) -> np.ndarray:
        """`combined_score` from patch tokens at hand, e.g. those cached in the index version (float16): only
        the text tower and the matcher run (docs/decisions.md has both costs)."""
        if len(patches) == 0:
            return np.zeros(0, dtype=np.float32)
        patches = torch.as_tensor(patches).float()
        text = text_tokens(self.encoder, texts)
        return self.score_tokens(patches, text.states, text.mask, weights, cosines)

    def score_tokens(self, patches: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                     weights: Sequence[float], cosines: np.ndarray) -> np.ndarray:
        total = np.zeros(len(patches), dtype=np.float64)
        with torch.inference_mode():
            for text_states, text_mask, weight in zip(states, mask, weights, strict=True):
                pairs = len(patches)
                logits = self.matcher(patches, text_states.expand(pairs, -1, -1), text_mask.expand(pairs, -1))
                total += weight * combined_score(logits.double().numpy(), np.asarray(cosines, np.float64))
        return (total / sum(weights)).astype(np.float32)


def find_reranker(encoder: DualEncoder, index_dir: Path | None = None) -> tuple[Reranker | None, str]:
    """The reranker for the encoder's weights (`matcher_file`: beside the index, else beside a local-dir: model's
    weights), or None and the reason a person can act on."""
    path = matcher_file(encoder, index_dir)
    if path is None:
        return None, no_matcher_reason(encoder, index_dir)
    try:
        matcher = load_scorer(path, encoder.fingerprint)
    except (ModelMismatch, ModelLoadError) as error:
        log.warning("re-ranking unavailable: %s", error)
        return None, f"matcher refused: {error}"
    if not isinstance(matcher, CrossAttentionMatcher):
        return None, f"{path} is not a cross-attention matcher"
    log.info("re-ranking with %s", path)
    return Reranker(encoder, matcher, path), f"cross-attention matcher {path}, trained for {encoder.fingerprint}"
