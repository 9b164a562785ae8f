"""The local embedder: decode threads read and preprocess files while one model embeds batches on this machine."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from clipspace.fusion.tokens import image_tokens
from clipspace.index.writer import write_faiss
from clipspace.openmp import serial_torch_here
from clipspace.runtimes import TORCH, Encoder
from index_builder.files import Movable, Processed, Work, read_file
from index_builder.options import BuildOptions


class LocalEmbedder:
    """Pillow and hashlib release the GIL, so decoding on threads overlaps with the model's forward pass."""

    def __init__(self, encoder: Encoder, options: BuildOptions) -> None:
        self.encoder = encoder
        self.options = options
        self.write_faiss = write_faiss

    def process(self, work: Iterable[Work], movable: dict[str, Movable], scratch: Path,
                token_shape: tuple[int, int] | None = None) -> Iterator[Processed]:
        """Answers in the order of `work`; at most a few batches are read ahead, whatever the corpus."""
        return embed_in_batches(self._read(work, movable), self.encoder, self.options.batch_size,
                                token_shape is not None)

    def _read(self, work: Iterable[Work], movable: dict[str, Movable]) -> Iterator[Processed]:
        limits, root = self.options.limits(self.encoder.image_size), self.options.images
        preprocess = self.encoder.preprocess
        ahead: deque[Future[Processed]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="decode",
                                  initializer=serial_torch_here)  # one OpenMP team: the model's (clipspace.openmp)
        try:
            for entry in work:
                ahead.append(pool.submit(read_file, root, entry, movable, limits, preprocess))
                if len(ahead) >= 4 * self.options.batch_size:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # on Ctrl-C, drop the queued files instead of decoding them first
            pool.shutdown(wait=True, cancel_futures=True)


def embed_in_batches(read: Iterable[Processed], encoder: Encoder, batch_size: int,
                     tokens: bool = False) -> Iterator[Processed]:
    """Embed the pixels of `batch_size` files at a time, answering every file (reused and skipped ride along);
    with `tokens`, each embedded file also keeps its patch tokens for the re-ranker."""
    batch: list[Processed] = []
    pending = 0
    for found in read:
        batch.append(found)
        pending += found.pixels is not None
        if pending == batch_size or (pending == 0 and len(batch) >= batch_size):
            yield from embed_batch(batch, encoder, tokens)
            batch, pending = [], 0
    yield from embed_batch(batch, encoder, tokens)


def embed_batch(batch: list[Processed], encoder: Encoder, tokens: bool) -> list[Processed]:
    """Embed the files of `batch` that hold pixels, in one forward pass; the others pass through unchanged."""
    with_pixels = [found for found in batch if found.pixels is not None]
    if with_pixels:
        vectors, patches = embed_pixels(encoder, np.stack([found.pixels for found in with_pixels]), tokens)
        for index, found in enumerate(with_pixels):
            found.vector, found.pixels = vectors[index], None
            found.tokens = None if patches is None else patches[index]
    return batch


def embed_pixels(encoder: Encoder, pixels: np.ndarray, tokens: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Vectors of a preprocessed batch and, with `tokens`, its patch tokens in float16 from the same forward pass."""
    if not tokens:  # torch's towers take a tensor, ONNX Runtime's the array itself
        return encoder.embed_pixels(torch.from_numpy(pixels) if encoder.runtime == TORCH else pixels), None
    found = image_tokens(encoder, torch.from_numpy(pixels))
    return found.pooled.numpy(), found.patches.half().numpy()
