"""Micro-batching: requests that arrive while the model is busy are embedded together in one forward pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from app import metrics


class MicroBatcher:
    """Queue single items; one worker runs `embed` on everything queued (up to `max_batch`) at once.

    No waiting window: a lone request goes straight through, and under load the queue fills while the
    previous batch runs, so batches form exactly when they pay off. All model work runs on `executor`
    (one thread), which keeps concurrent requests from fighting over the CPU cores.

    The worker ends when the queue is empty and the next request starts another. A worker left waiting on its
    queue is a reference cycle (task, queue, waiter) that kept the encoder alive after a model switch until a
    full garbage collection: the old model's memory stayed beside the new one's (tests/test_model_switch.py).
    """

    def __init__(self, embed: Callable[[Sequence[Any]], np.ndarray], executor: Executor, max_batch: int,
                 name: str = "text") -> None:
        self.name = name  # the queue's label in the metrics: "text" or "image"
        self._embed = embed
        self._executor = executor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future, float]] | None = None
        self._worker: asyncio.Task | None = None

    async def embed(self, item: Any) -> np.ndarray:
        if self._queue is None:
            self._queue = asyncio.Queue()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.perf_counter()))
        metrics.set_queue_depth(self.name, self._queue.qsize())
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._queue.empty():
            batch = [self._queue.get_nowait()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            metrics.set_queue_depth(self.name, self._queue.qsize())
            waiting = [(item, future) for item, future, _ in batch if not future.done()]  # skip cancelled
            if not waiting:
                continue
            started = time.perf_counter()
            for _, _, queued in batch:
                metrics.observe_stage("batch_wait", started - queued)
            metrics.observe_batch(self.name, len(waiting))
            try:
                with metrics.timed("embed"):
                    vectors = await loop.run_in_executor(self._executor, self._embed, [item for item, _ in waiting])
            except Exception as error:  # the callers get the error; the worker lives on for the next batch
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), vector in zip(waiting, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
