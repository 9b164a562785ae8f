"""The scorers the fusion tables compare (cosine, concatenation MLP, cross-attention matcher) and the two measures
they are compared on: binding accuracy against twins, and text-to-image R@1 with re-ranking as the service does."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from clipspace.fusion.features import LANGUAGES, TwinFeatures
from clipspace.fusion.matcher import ConcatMLP, CrossAttentionMatcher
from clipspace.fusion.rerank import combined_score

Scorer = Callable[[TwinFeatures, str, np.ndarray, np.ndarray], np.ndarray]


def cosine_scorer(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
    pooled = features.text[language].pooled
    return (features.image_pooled[images] * pooled[captions]).sum(dim=-1).numpy()


def concat_scorer(mlp: ConcatMLP) -> Scorer:
    def score(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mlp(features.image_pooled[images], features.text[language].pooled[captions]).numpy()
    return score


def matcher_scorer(matcher: CrossAttentionMatcher, batch: int = 512) -> Scorer:
    def score(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
        text = features.text[language]
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                rows, caps = images[start:start + batch], captions[start:start + batch]
                length = int(text.mask[caps].sum(dim=1).max())
                out.append(matcher(features.patches[rows].float(), text.states[caps, :length].float(),
                                   text.mask[caps, :length]).numpy())
        return np.concatenate(out)
    return score


def binding_accuracy(features: TwinFeatures, scorers: dict[str, Scorer]) -> dict[str, dict[str, float]]:
    """Does a scene's caption score its own image above its twin's image? Chance is 0.5 (ties count half)."""
    n = features.n
    own, twin = np.arange(n), np.arange(n) + n
    table: dict[str, dict[str, float]] = {}
    for name, scorer in scorers.items():
        table[name] = {}
        for language in LANGUAGES:
            right, wrong = scorer(features, language, own, own), scorer(features, language, twin, own)
            table[name][language] = float(np.mean((right > wrong) + 0.5 * (right == wrong)))
    return table


def rerank_recall(features: TwinFeatures, scorers: dict[str, Scorer], depth: int) -> dict[str, dict[str, float]]:
    """Text→image R@1 of every gallery image's caption, scenes and twins together: cosine over the whole
    gallery, then each other scorer re-ranking cosine's top `depth` as the service does (`combined_score`).
    An image whose caption is identical to the query's counts as a hit (the caption cannot tell them apart)."""
    n_images = 2 * features.n
    table: dict[str, dict[str, float]] = {name: {} for name in scorers}
    for language in LANGUAGES:
        captions = features.captions(language)
        owner = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
        caption_ids = np.array([owner[c] for c in captions])
        text = features.text[language].pooled
        cosine = (text @ features.image_pooled.T).numpy()
        top = np.argsort(-cosine, axis=1, kind="stable")[:, :depth]
        for name, scorer in scorers.items():
            hits = []
            for query in range(n_images):
                candidates = top[query]
                if name == "cosine":
                    best = candidates[0]
                else:
                    logits = scorer(features, language, candidates, np.full(len(candidates), query))
                    best = candidates[int(np.argmax(combined_score(logits, cosine[query, candidates])))]
                hits.append(caption_ids[best] == caption_ids[query])
            table[name][language] = float(np.mean(hits))
    return table
