"""The encoder slot: a model on its own thread, its micro-batchers, and the limits on decoding what it embeds.

It takes any `clipspace.runtimes.Encoder`, torch's or ONNX Runtime's, and imports neither runtime itself."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.batching import MicroBatcher
from app.runtime import RuntimeInUse
from clipspace.allocator import return_freed_memory
from clipspace.errors import ClipspaceError, ModelUnavailable
from clipspace.images import load_image
from clipspace.runtimes import TORCH, Encoder

log = logging.getLogger(__name__)

T = TypeVar("T")


class Decoding:
    """How large an image may be, and how many are decoded (and held in memory) at once: uploads and
    thumbnails share one bound, whatever encoder is serving. `async with decoding:` holds one place."""

    def __init__(self, max_pixels: int, at_once: int | None = None) -> None:
        self.max_pixels = max_pixels
        self._places = asyncio.Semaphore(at_once or min(4, os.cpu_count() or 1))

    async def __aenter__(self) -> None:
        await self._places.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self._places.release()


class EncoderSlot:
    """An encoder with its two micro-batchers; shared by every index version built with the same model.

    All its model work runs on `executor`, one thread, so concurrent requests never fight over the cores.
    """

    def __init__(self, encoder: Encoder, runtime: RuntimeInUse, executor: ThreadPoolExecutor, max_batch: int,
                 decoding: Decoding) -> None:
        self.encoder, self.runtime = encoder, runtime
        self.decoding = decoding
        self._executor = executor
        self._texts = MicroBatcher(encoder.embed_texts, executor, max_batch, name="text")
        self._pixels = MicroBatcher(_then_return_freed_memory(encoder.embed_pixels), executor, max_batch,
                                    name="image")

    async def embed_text(self, text: str) -> np.ndarray:
        return await _model_answer(self._texts.embed(text))

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, each queued on its own, so they batch with whatever else is waiting."""
        return np.stack(await asyncio.gather(*(self.embed_text(text) for text in texts)))

    async def embed_image(self, data: bytes) -> np.ndarray:
        """Decode and preprocess on a worker thread (never the event loop), within the decoding bound, then
        join the pixel batch.

        JPEGs are drafted exactly as the builder drafts them, so a file sent back as a query embeds to the
        very vector stored for it.
        """
        encoder, max_pixels = self.encoder, self.decoding.max_pixels

        def decode() -> object:
            if encoder.runtime == TORCH:
                from clipspace.openmp import serial_torch_here  # imports torch: only where torch already runs

                serial_torch_here()  # a second OpenMP team would slow every forward pass (clipspace.openmp)
            return encoder.preprocess(load_image(data, max_pixels=max_pixels, draft_size=encoder.image_size))

        async with self.decoding:
            with metrics.timed("decode"):
                pixels = await run_in_threadpool(decode)
        return await _model_answer(self._pixels.embed(pixels))

    async def on_model_thread(self, work: Callable[[], T]) -> T:
        """Other model work (re-ranking), never beside a forward pass."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


async def _model_answer(embedding: Awaitable[np.ndarray]) -> np.ndarray:
    """A vector from the model thread; a model that fails there is a 503 with the reason, not a 500.

    The batcher hands the error to every request of the failed batch and carries on, so the next request
    is served again (a transient failure such as running out of memory passes with the batch that hit it).
    """
    try:
        return await embedding
    except ClipspaceError:
        raise
    except Exception as error:
        log.error("the model failed to embed a batch: %r", error, exc_info=error)
        raise ModelUnavailable(f"the model failed to embed the query: {type(error).__name__}: {error}") from error


def _then_return_freed_memory(embed_pixels: Callable[[Sequence[object]], np.ndarray]
                              ) -> Callable[[Sequence[object]], np.ndarray]:
    """`embed_pixels`, after which the C heap's freed pages go back: the decoded pictures and the forward pass's
    activations, freed across the decoding threads' heaps, otherwise stay resident after a burst of uploads.

    A function of the encoder's method, not a method of the slot: a slot -> batcher -> slot cycle would keep a
    retired model alive until the garbage collector's next pass, and its memory with it (tests/test_model_switch.py).
    """
    def embed(batch: Sequence[object]) -> np.ndarray:
        vectors = embed_pixels(batch)
        return_freed_memory()
        return vectors
    return embed

