"""Micro-batching: concurrent requests share forward passes, errors reach their callers, the worker survives."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.batching import MicroBatcher


def slow_embed(calls: list[int]):
    def embed(items):
        calls.append(len(items))
        time.sleep(0.05)  # a forward pass: long enough for other requests to queue up behind it
        return np.array([[float(item)] for item in items])
    return embed


def test_requests_arriving_while_the_model_is_busy_share_one_batch():
    calls: list[int] = []

    async def scenario():
        batcher = MicroBatcher(slow_embed(calls), ThreadPoolExecutor(1), max_batch=32)
        return await asyncio.gather(*(batcher.embed(n) for n in range(20)))

    results = asyncio.run(scenario())
    assert [float(vector[0]) for vector in results] == list(range(20))  # each caller gets its own row
    assert sum(calls) == 20 and len(calls) < 20 and max(calls) > 1


def test_batches_never_exceed_max_batch():
    calls: list[int] = []

    async def scenario():
        batcher = MicroBatcher(slow_embed(calls), ThreadPoolExecutor(1), max_batch=4)
        await asyncio.gather(*(batcher.embed(n) for n in range(17)))

    asyncio.run(scenario())
    assert max(calls) <= 4 and sum(calls) == 17


def test_a_failing_batch_fails_its_callers_and_the_next_request_still_works():
    def embed(items):
        if "bad" in items:
            raise ValueError("boom")
        return np.ones((len(items), 1))

    async def scenario():
        batcher = MicroBatcher(embed, ThreadPoolExecutor(1), max_batch=8)
        with pytest.raises(ValueError, match="boom"):
            await batcher.embed("bad")
        return await batcher.embed("good")

    assert asyncio.run(scenario()).tolist() == [1.0]
