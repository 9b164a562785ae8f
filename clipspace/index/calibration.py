"""A model's relevance calibration, fitted on an index version's own vectors: cosine -> probability of a match.

Stored in the version's manifest (tied to the model's fingerprint), so every answer of the version maps its cosines
the same way, and a rebuild with another model or corpus fits it again. Two ways to fit, one stored form (a logistic
curve: monotone in the cosine and bounded in (0, 1)):
- "platt": where captions exist, texts taken from them (each caption and its clauses) are searched among captioned
  images; each of their first results is a labelled pair (a match when its caption contains the text). Platt
  scaling on those pairs, at even odds (matches and others weigh half each, however many of each a corpus has),
  answers the probability that a result of a first page matches; a fifth of the texts is held out, and the
  calibration error on them is stored beside the curve.
- "null-tail": without captions there are no matches to learn from, only unrelated pairs (a bank of generic
  prompts against the images; images against other images). The curve puts 0.1 at the 99th and 0.5 at the
  99.9th percentile of their scores: a ranking of how unusual a score is, not a probability of a match.
docs/decisions.md ("Calibrated relevance") has the numbers that chose this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

TOP = 10  # results of a first page (the benchmark's page)
# The pairs a calibration learns from are the first results of each text: the first 2% of the images searched
# (at least one). A share, not a count: the first 10 of 60 images are a sixth of them, of 2000 the very best, and
# a count moved the fitted midpoint from 0.34 to 0.45 between the two (a share: 0.41-0.47 over 60-600 images).
TOP_SHARE = 0.02
SAMPLE_ROWS = 2000  # images the calibration searches among
MAX_TEXTS = 600  # caption texts embedded per build (a few seconds of a ViT-B-32 text tower on a CPU)
MIN_PAIRS = 20  # fewer positives or negatives than this: the Platt fit is not trusted, the null tail is used
HELD_OUT_EVERY = 5  # every fifth text is held out to measure the calibration error
NULL_QUANTILES = (0.99, 0.999)  # the unrelated-pair scores that map to relevance 0.1 and 0.5
# A "large" drop: larger than 999 in 1,000 drops between neighbours in the first 50 results of unrelated prompts.
# The 99th percentile cut present concepts' first pages (recall@10 0.58 against 0.95 uncut, benchmarks' relevance).
AUTOCUT_QUANTILE = 0.999
AUTOCUT_DEPTH = 50
ECE_BINS = 10

# Generic things an index is usually not about, in English and Chinese: their scores against the corpus are the
# unrelated pairs of the null tail and of the autocut drop.
PROMPT_BANK = (
    "a dog", "a cat", "a horse", "a bird", "a fish", "a car", "a bicycle", "an airplane", "a boat", "a train",
    "a tree", "a flower", "a mountain", "a beach", "a forest", "a city street", "a house", "a bridge", "a person",
    "a child", "a face", "a crowd", "food on a plate", "a cup of coffee", "a pizza", "a computer", "a phone",
    "a book", "a chair", "a bed", "a clock", "a guitar", "a football", "snow", "a sunset", "the night sky",
    "a painting", "a handwritten note", "a map", "an empty room",
    "一只狗", "一只猫", "一匹马", "一辆汽车", "一棵树", "一朵花", "一座山", "海滩", "城市街道", "一栋房子",
    "一个人", "一张脸", "一盘食物", "一杯咖啡", "一台电脑", "一部手机", "一本书", "一把椅子", "雪景", "日落",
)

Key = Literal["text-image", "image-image", "text-text"]
_CLAUSES = re.compile(r"\s*(?:[,;，；、]|\band\b|\bwith\b)\s*")


class RelevanceMap(BaseModel):
    """relevance = 1 / (1 + exp(-(slope * cosine + intercept))), slope > 0."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["platt", "null-tail"]
    slope: float
    intercept: float
    autocut_drop: float  # in log-odds: a fall at least this large between neighbours is where autocut cuts
    positives: int
    negatives: int
    held_out_ece: float | None = None  # platt only: expected calibration error on the held-out texts' pairs

    def log_odds(self, cosines: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(cosines, dtype=np.float64) + self.intercept

    def relevance(self, cosines: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * self.log_odds(cosines)))  # the logistic, without exp's overflow


class Calibration(BaseModel):
    """A version's relevance maps by (query modality, searched modality), fitted for the model `fingerprint`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: str
    maps: dict[Key, RelevanceMap]


def map_key(query_modality: str, target: str) -> Key:
    """Which map scores a query of `query_modality` ("text" | "image") against `target` vectors (cosines are
    symmetric: an image searching captions is the same pair as a caption searching images)."""
    if query_modality != target:
        return "text-image"
    return "image-image" if target == "image" else "text-text"


def fit_calibration(images: np.ndarray, captions: np.ndarray, captioned: Sequence[tuple[int, int, str]],
                    embed_texts: Callable[[Sequence[str]], np.ndarray], fingerprint: str,
                    seed: int = 0) -> Calibration | None:
    """The calibration of a version: `images` / `captions` are its vectors in row order, `captioned` the
    (image row, caption row, caption) of captioned items. None for an empty version."""
    if len(images) == 0:
        return None
    rng = np.random.default_rng(seed)
    sample = np.asarray(images[np.sort(rng.choice(len(images), min(len(images), SAMPLE_ROWS), replace=False))],
                        dtype=np.float32)
    bank = np.asarray(embed_texts(PROMPT_BANK), dtype=np.float32)
    unrelated_lists = np.sort(bank @ sample.T, axis=1)[:, ::-1][:, :AUTOCUT_DEPTH]
    maps: dict[Key, RelevanceMap | None] = {}
    cross = _platt_map(images, captioned, embed_texts, rng) if len(captioned) >= MIN_PAIRS else None
    maps["text-image"] = cross or _null_tail_map((bank @ sample.T).ravel())
    pairs = sample[: min(len(sample), 500)]
    maps["image-image"] = _null_tail_map((pairs @ pairs.T)[~np.eye(len(pairs), dtype=bool)])
    if len(captions):
        some = np.asarray(captions[np.sort(rng.choice(len(captions), min(len(captions), SAMPLE_ROWS),
                                                      replace=False))], dtype=np.float32)
        maps["text-text"] = _null_tail_map((bank @ some.T).ravel())
    return Calibration(fingerprint=fingerprint, maps={
        key: mapping.model_copy(update={"autocut_drop": _autocut_drop(mapping, unrelated_lists)})
        for key, mapping in maps.items() if mapping is not None})


def caption_texts(caption: str) -> list[str]:
    """A caption and its clauses ("a red star at the top and a blue square" -> the whole, "a red star at the
    top", "a blue square"): each names something the picture holds, as a short query would."""
    clauses = [part for part in _CLAUSES.split(caption.strip()) if len(part) > 1]
    return list(dict.fromkeys([caption.strip(), *clauses]))


def expected_calibration_error(predicted: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS,
                               even_odds: bool = True) -> float:
    """Mean |predicted - observed| over equal-width bins of `predicted`, each bin weighted by its pairs, at even
    odds (matches and others weigh half each, as the fit does), or at the pairs' own share of matches."""
    predicted, labels = np.asarray(predicted, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    weight = balanced_weights(labels) if even_odds else np.ones_like(labels)
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    error = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            mass = weight[chosen].sum()
            error += abs(np.average(predicted[chosen], weights=weight[chosen])
                         - np.average(labels[chosen], weights=weight[chosen])) * mass
    return float(error / max(weight.sum(), 1e-12))


def labelled_pairs(texts: Sequence[str], text_vectors: np.ndarray, pool: np.ndarray, pool_captions: Sequence[str],
                   depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The cosines of each text's first `depth` results in `pool`, and whether each result's caption holds the
    text."""
    scores = text_vectors @ pool.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    lowered = [caption.lower() for caption in pool_captions]
    cosines = np.take_along_axis(scores, top, axis=1).ravel()
    labels = np.array([text.lower() in lowered[column] for text, row in zip(texts, top, strict=True)
                       for column in row], dtype=np.float64)
    return cosines, labels


def _platt_map(images: np.ndarray, captioned: Sequence[tuple[int, int, str]],
               embed_texts: Callable[[Sequence[str]], np.ndarray], rng: np.random.Generator
               ) -> RelevanceMap | None:
    chosen = [captioned[i] for i in np.sort(rng.choice(len(captioned), min(len(captioned), SAMPLE_ROWS),
                                                       replace=False))]
    pool = np.asarray(images[[row for row, _, _ in chosen]], dtype=np.float32)
    pool_captions = [caption for _, _, caption in chosen]
    texts = list(dict.fromkeys(text for caption in pool_captions for text in caption_texts(caption)))
    texts = [texts[i] for i in np.sort(rng.choice(len(texts), min(len(texts), MAX_TEXTS), replace=False))]
    vectors = np.asarray(embed_texts(texts), dtype=np.float32)
    held = np.arange(len(texts)) % HELD_OUT_EVERY == 0
    depth = max(1, round(TOP_SHARE * len(pool)))
    fit_x, fit_y = labelled_pairs([t for t, h in zip(texts, held, strict=True) if not h], vectors[~held], pool,
                                  pool_captions, depth)
    positives, negatives = int(fit_y.sum()), int(len(fit_y) - fit_y.sum())
    if min(positives, negatives) < MIN_PAIRS:
        return None
    slope, intercept = platt(fit_x, fit_y)
    if slope <= 0:
        return None
    mapping = RelevanceMap(method="platt", slope=slope, intercept=intercept, autocut_drop=0.0,
                           positives=positives, negatives=negatives)
    test_x, test_y = labelled_pairs([t for t, h in zip(texts, held, strict=True) if h], vectors[held], pool,
                                    pool_captions, depth)
    ece = expected_calibration_error(mapping.relevance(test_x), test_y) if len(test_y) else None
    return mapping.model_copy(update={"held_out_ece": None if ece is None else round(ece, 4)})


def platt(scores: np.ndarray, labels: np.ndarray, steps: int = 100) -> tuple[float, float]:
    """Platt scaling (Newton's method on the log loss) at even odds: each class weighs half, whatever its count,
    with Platt's targets (N+ + 1)/(N+ + 2) and 1/(N- + 2) so that separable pairs still give a finite slope."""
    x, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    target, weight = _targets(y), balanced_weights(y)
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (weight * (p - target))
        hessian = design.T @ (design * (weight * p * (1 - p) + 1e-12)[:, None])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(weights[0]), float(weights[1])


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per pair: half the weight to the matches, half to the others (even prior odds of a match)."""
    y = np.asarray(labels, dtype=np.float64)
    return np.where(y > 0, 0.5 / max(y.sum(), 1), 0.5 / max(len(y) - y.sum(), 1))


def _targets(y: np.ndarray) -> np.ndarray:
    positives, negatives = y.sum(), len(y) - y.sum()
    return np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def _null_tail_map(unrelated: np.ndarray) -> RelevanceMap | None:
    """None with fewer than MIN_PAIRS scores (a version of one image has no pair of images): no relevance there."""
    if len(unrelated) < MIN_PAIRS:
        return None
    low, high = (float(value) for value in np.quantile(unrelated, NULL_QUANTILES))
    slope = math.log(9) / max(high - low, 1e-4)  # 0.1 at `low` (log-odds -ln 9), 0.5 at `high`
    return RelevanceMap(method="null-tail", slope=slope, intercept=-slope * high, autocut_drop=0.0,
                        positives=0, negatives=len(unrelated))


def _autocut_drop(mapping: RelevanceMap, unrelated_lists: np.ndarray) -> float:
    drops = -np.diff(mapping.log_odds(unrelated_lists), axis=1).ravel()
    return round(float(np.quantile(drops, AUTOCUT_QUANTILE)), 4) if drops.size else 1.0
