"""Timing helpers shared by every benchmark: warm up first, time each call alone, summarise by percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def time_calls(call: Callable[[int], object], repeats: int, warmup: int) -> list[float]:
    """Seconds taken by each of `repeats` calls of `call(i)`, after `warmup` untimed calls (caches, allocators)."""
    for index in range(warmup):
        call(index)
    samples = []
    for index in range(repeats):
        started = time.perf_counter()
        call(warmup + index)
        samples.append(time.perf_counter() - started)
    return samples


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean in milliseconds: p50 is the headline (robust to a contended core), p95 shows the tail."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 3),
            "p95_ms": round(float(np.percentile(values, 95)), 3), "mean_ms": round(float(values.mean()), 3)}
