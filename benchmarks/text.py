"""Text cost: the trimmed text path (`DualEncoder.embed_texts`) against open_clip's full-context one, same run.

The builder embeds captions with `encoder.embed_texts(captions)`; the full path is what that call did before
trimming: every text padded to the whole context, in input order, batches of the same size.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.latency import QUERIES
from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.encoder import DualEncoder

CAPTION_BATCH = 256  # DualEncoder.embed_texts' default, which the builder uses
_WORDS = ("small", "large", "red", "green", "blue", "yellow", "round", "square", "photo", "of", "a", "the", "on", "in",
          "near", "beside", "under", "striped", "old", "new", "wooden", "metal", "dog", "cat", "car", "tree", "house",
          "street", "river", "mountain", "person", "child", "table", "window")


@dataclass(frozen=True)
class TextResult:
    captions: int
    caption_words_mean: float
    captions_trimmed_s: float
    captions_full_s: float
    captions_speedup: float
    captions_cosine_min: float
    query_trimmed: dict[str, float]  # one query text at a time, as the service embeds them
    query_full: dict[str, float]
    query_speedup_p50: float


def measure_text(encoder: DualEncoder, captions: int, queries: int) -> TextResult:
    texts = generated_captions(captions)
    progress(f"text: {captions} captions, trimmed and full context")
    trimmed_s, trimmed = _timed(lambda: encoder.embed_texts(texts, batch_size=CAPTION_BATCH))
    full_s, full = _timed(lambda: _full_context(encoder, texts))
    progress(f"text: {queries} single queries, trimmed and full context")
    single = [[QUERIES[index % len(QUERIES)]] for index in range(queries)]
    query_trimmed = time_calls(lambda index: encoder.embed_texts(single[index % queries]), queries, warmup=5)
    query_full = time_calls(lambda index: _full_context(encoder, single[index % queries]), queries, warmup=5)
    return TextResult(
        captions=captions, caption_words_mean=round(statistics.mean(len(text.split()) for text in texts), 1),
        captions_trimmed_s=round(trimmed_s, 3), captions_full_s=round(full_s, 3),
        captions_speedup=round(full_s / trimmed_s, 2),
        captions_cosine_min=round(float((trimmed * full).sum(axis=1).min()), 6),
        query_trimmed=latency_summary(query_trimmed), query_full=latency_summary(query_full),
        query_speedup_p50=round(statistics.median(query_full) / statistics.median(query_trimmed), 2))


def generated_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of 4 to 30 words, like sidecar captions of a photo collection (most short, some long)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(min(30, 4 + int(rng.expovariate(1 / 6))))) for _ in range(count)]


def _full_context(encoder: DualEncoder, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([
            F.normalize(encoder.model.encode_text(encoder.tokenizer(texts[start:start + CAPTION_BATCH])).float(),
                        dim=-1).numpy() for start in range(0, len(texts), CAPTION_BATCH)])


def _timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result
