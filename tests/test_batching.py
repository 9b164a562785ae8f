"""Micro-batching: concurrent requests share forward passes, errors reach their callers, the worker survives, and
an idle batcher holds nothing alive."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
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


class Model:
    def embed(self, items):
        return np.ones((len(items), 1))


def test_an_idle_batcher_dropped_frees_its_model_at_once_without_a_garbage_collection():
    """After a model switch the old encoder's batchers are dropped: the model must go with them then, not at some
    full GC (a worker task waiting on its queue is a reference cycle), or its memory stays beside the new one."""

    async def scenario():
        model = Model()
        batcher = MicroBatcher(model.embed, ThreadPoolExecutor(1), max_batch=8)
        await asyncio.gather(*(batcher.embed(n) for n in range(5)))
        await asyncio.sleep(0.05)
        gone = weakref.ref(model)
        del model, batcher
        return gone() is None

    gc.disable()
    try:
        assert asyncio.run(scenario())
    finally:
        gc.enable()
