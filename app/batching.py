"""Micro-batching: requests that arrive while the model is busy are embedded together in one forward pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np


class MicroBatcher:
    """Queue single items; one worker runs `embed` on everything queued (up to `max_batch`) at once.

    No waiting window: a lone request goes straight through, and under load the queue fills while the
    previous batch runs, so batches form exactly when they pay off. All model work runs on `executor`
    (one thread), which keeps concurrent requests from fighting over the CPU cores.
    """

    def __init__(self, embed: Callable[[Sequence[Any]], np.ndarray], executor: Executor, max_batch: int) -> None:
        self._embed = embed
        self._executor = executor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def embed(self, item: Any) -> np.ndarray:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            waiting = [(item, future) for item, future in batch if not future.done()]  # skip cancelled
            if not waiting:
                continue
            try:
                vectors = await loop.run_in_executor(self._executor, self._embed, [item for item, _ in waiting])
            except Exception as error:  # the callers get the error; the worker lives on for the next batch
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), vector in zip(waiting, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
