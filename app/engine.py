"""What the service serves: the published index version and the encoder it was built with, swapped live."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.batching import MicroBatcher
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder, with_absolute_paths
from clipspace.errors import (
    ClipspaceError,
    ItemNotFound,
    ModelLoadError,
    ModelMismatch,
    ModelUnavailable,
    RerankUnavailable,
)
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.rerank import RERANK_DEPTH, find_reranker, model_folder
from clipspace.identity import ModelIdentity
from clipspace.images import load_image
from clipspace.index.publish import current_version_name
from clipspace.index.records import SearchHit
from clipspace.index.version import IndexVersion
from clipspace.openmp import serial_torch_here
from clipspace.settings import Settings

log = logging.getLogger(__name__)

PROBE_TEXT = "a photo"


class EncoderSlot:
    """An encoder with its two micro-batchers; shared by every index version built with the same model."""

    def __init__(self, encoder: DualEncoder, executor: ThreadPoolExecutor, max_batch: int) -> None:
        self.encoder = encoder
        self.texts = MicroBatcher(encoder.embed_texts, executor, max_batch, name="text")
        self.pixels = MicroBatcher(lambda batch: encoder.embed_pixels(torch.stack(list(batch))), executor,
                                   max_batch, name="image")
        self.executor = executor
        self.reranker, self.rerank_detail = find_reranker(encoder)
        self.templates = zero_shot.model_templates(model_folder(encoder))


@dataclass(frozen=True)
class Engine:
    """One consistent pair: a request takes an Engine once and uses it to the end, even across a swap."""

    version: IndexVersion
    slot: EncoderSlot
    searching: Executor  # threads that run FAISS searches, each with one OpenMP thread (`search_executor`)

    @property
    def model_name(self) -> str:
        return self.version.model.model

    async def embed_text(self, text: str) -> np.ndarray:
        return await _model_answer(self.slot.texts.embed(text))

    async def embed_image(self, data: bytes, max_pixels: int, decoding: asyncio.Semaphore) -> np.ndarray:
        """Decode and preprocess on a worker thread (never the event loop), then join the pixel batch.

        JPEGs are drafted exactly as the builder drafts them, so a file sent back as a query embeds to the
        very vector stored for it. `decoding` bounds how many uploads are decoded (and held) at once.
        """
        encoder = self.slot.encoder

        def decode() -> torch.Tensor:
            serial_torch_here()  # a second OpenMP team would slow every forward pass (clipspace.openmp)
            return encoder.preprocess(load_image(data, max_pixels=max_pixels, draft_size=encoder.image_size))

        async with decoding:
            with metrics.timed("decode"):
                pixels = await run_in_threadpool(decode)
        return await _model_answer(self.slot.pixels.embed(pixels))

    async def search(self, vector: np.ndarray, k: int, target: str) -> list[SearchHit]:
        """Nearest items; a small exact index is searched right here, on the event loop, any other on a
        search thread. Handing a search to a thread and back cost ~0.1 ms a query here, more than scanning
        a few thousand vectors (docs/decisions.md, "The service as fast as its encoder")."""
        with metrics.timed("search"):
            if self.version.quick_to_search(target):
                faiss.omp_set_num_threads(1)  # this thread's FAISS team: none, as on the search threads
                return self.version.search(vector, k, target)
            return await asyncio.get_running_loop().run_in_executor(self.searching, self.version.search, vector,
                                                                    k, target)

    async def probe(self) -> None:
        """Prove the model answers: embed a text and check it is a unit vector of the index's dimension."""
        vector = await self.embed_text(PROBE_TEXT)
        if vector.shape != (self.version.dim,) or not np.isfinite(vector).all():
            raise ModelUnavailable(f"the model answered a vector of shape {vector.shape}; the index holds "
                                   f"{self.version.dim}-d vectors")

    def image_file(self, item_id: int) -> Path:
        """The file of an indexed item; nothing else (no client path ever reaches the disk)."""
        item = self.version.item(item_id)
        if item is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        root = self.version.corpus_root.resolve()
        path = (root / item.path).resolve()
        if not (path.is_relative_to(root) and path.is_file()):
            raise ItemNotFound(f"the file of image {item_id} is no longer in the image folder")
        return path

    # ---------------------------------------------------------------------------------------------- fusion

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with: zero-shot softmax uses it, not a guess."""
        return float(self.slot.encoder.model.logit_scale.detach().float().exp())

    def image_vector(self, item_id: int) -> np.ndarray:
        """The stored vector of an indexed image: "more like this" costs no decoding and no forward pass."""
        vector = self.version.image_vector(item_id)
        if vector is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        return vector

    @property
    def zero_shot_templates(self) -> Mapping[str, tuple[str, ...]]:
        """Prompt ensembles per language: the model's own (`zero_shot_templates.json`) over the generic ones."""
        return self.slot.templates

    @property
    def rerank_available(self) -> bool:
        return self.slot.reranker is not None

    @property
    def rerank_detail(self) -> str:
        return self.slot.rerank_detail

    def rerank_texts(self, terms: Sequence, target: str) -> list[tuple[str, float]]:
        """The texts the matcher reads for a query (its positive text terms), or why it cannot re-rank."""
        if self.slot.reranker is None:
            raise RerankUnavailable(f"re-ranking is not available for this index: {self.slot.rerank_detail}")
        if target != "image":
            raise RerankUnavailable("re-ranking scores images: it needs target 'image'")
        texts = [(term.text, term.weight) for term in terms if term.text is not None and term.weight > 0]
        if not texts:
            raise RerankUnavailable("re-ranking reads the query's text: add a text term with a positive weight")
        return texts

    @staticmethod
    def rerank_depth(k: int) -> int:
        return max(k, RERANK_DEPTH)

    async def rerank(self, texts: list[tuple[str, float]], hits: list[SearchHit]) -> list[tuple[SearchHit, float]]:
        """Re-score candidates on the model thread (never beside another forward pass); best first.

        The patch tokens come from the index version when it keeps them for this matcher; otherwise each
        candidate is decoded and embedded again, and one whose file is gone is left out, as /images would 404.
        """
        reranker = self.slot.reranker
        words, weights = [text for text, _ in texts], [weight for _, weight in texts]

        def score() -> list[tuple[SearchHit, float]]:
            cached = (self.version.patch_tokens([hit.id for hit in hits])
                      if self.version.token_shape == reranker.token_shape else {})
            if cached:
                found = [hit for hit in hits if hit.id in cached]
                scores = reranker.score_patches(words, weights, np.stack([cached[hit.id] for hit in found]),
                                                np.array([hit.score for hit in found]))
            else:
                found, images = self._candidate_images(hits)
                scores = reranker.score(words, weights, images, np.array([hit.score for hit in found]))
            return sorted(zip(found, scores.tolist(), strict=True), key=lambda pair: -pair[1])

        with metrics.timed("rerank"):
            return await asyncio.get_running_loop().run_in_executor(self.slot.executor, score)

    def _candidate_images(self, hits: list[SearchHit]) -> tuple[list[SearchHit], list]:
        found, images = [], []
        for hit in hits:
            try:
                images.append(load_image(self.image_file(hit.id), draft_size=self.slot.encoder.image_size))
            except ClipspaceError as error:
                log.warning("re-ranking skips image %d: %s", hit.id, error)
                continue
            found.append(hit)
        return found, images


class EngineHolder:
    """Loads the version named by INDEX_DIR/current and its model, and follows `current` as it moves.

    A version that fails to load is reported by /readyz and never replaces a working engine. A failure that
    may pass (a model that could not be loaded, an unexpected error) is retried after RETRY_AFTER_S; a
    version that is wrong (model mismatch, corrupt files) is not retried until `current` names another.
    """

    RETRY_AFTER_S = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.problem: str | None = "starting: loading the index and its model"
        self._tried: str | None = None
        self._retry_at = 0.0
        self._slot: EncoderSlot | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._searching = search_executor()
        self.decoding = asyncio.Semaphore(min(4, os.cpu_count() or 1))  # bounds decoded uploads in memory

    def refresh(self) -> None:
        """Load `current` if it names a version not yet tried. Blocking: call it off the event loop."""
        with self._lock:
            name = current_version_name(self.settings.index_dir)
            if name is None:
                self.problem = (f"no index published at {self.settings.index_dir} yet: build one with "
                                f"`python -m index_builder --index {self.settings.index_dir}`")
                return
            if name == self._tried or time.monotonic() < self._retry_at:
                return
            self._tried = name
            try:
                version = IndexVersion(Path(self.settings.index_dir) / "versions" / name)
                slot = self._slot_for(version)
            except Exception as error:
                self._refused(name, error)
                return
            self.engine, self.problem = Engine(version, slot, self._searching), None
            log.info("serving index version %s (%d items, model %s)", name, version.count,
                     version.model.model)

    async def follow(self) -> None:
        """Load the index now, then poll `current` forever: new versions are picked up without a restart."""
        while True:
            await run_in_threadpool(self.refresh)
            await asyncio.sleep(self.settings.reload_interval_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._searching.shutdown(wait=False, cancel_futures=True)

    def _refused(self, name: str, error: Exception) -> None:
        serving = f" (still serving version {self.engine.version.name})" if self.engine else ""
        self.problem = f"index version {name} not loaded{serving}: {error}"
        log.error("%s", self.problem, exc_info=not isinstance(error, ClipspaceError))
        if isinstance(error, ModelLoadError) or not isinstance(error, ClipspaceError):
            self._tried, self._retry_at = None, time.monotonic() + self.RETRY_AFTER_S

    def _slot_for(self, version: IndexVersion) -> EncoderSlot:
        wanted = version.model
        spec = with_absolute_paths(ModelSpec(
            model=self.settings.model or wanted.model, pretrained=self.settings.pretrained or wanted.pretrained,
            precision=wanted.precision, device=self.settings.device, seed=wanted.seed or 0))
        reuse = self._slot is not None and self._slot.encoder.spec == spec
        # Loaded on the model thread, where it will run: torch's work stays on one OpenMP team (clipspace.openmp).
        encoder = self._slot.encoder if reuse else self._executor.submit(
            _load_encoder, spec, self.settings.threads).result()
        _check_same_model(encoder, wanted)
        if not reuse:
            self._slot = EncoderSlot(encoder, self._executor, self.settings.max_batch)
        return self._slot


def _load_encoder(spec: ModelSpec, threads: int | None) -> DualEncoder:
    with metrics.MODEL_LOAD_SECONDS.time():
        return load_encoder(spec, threads=threads)


def search_executor() -> ThreadPoolExecutor:
    """Threads for FAISS searches, off the event loop, each searching with one OpenMP thread.

    A single query gains nothing from more OpenMP threads, and idle ones spin on, taking cores from the model.
    FAISS's thread count belongs to the calling thread, so each search thread sets its own as it starts (set
    once on the main thread, it left every search a team of spinning threads: docs/decisions.md, Hardening).
    A plain executor rather than starlette's thread pool: anyio's hop costs more on the event loop, and a
    text query pays it every time (docs/decisions.md, "The service as fast as its encoder").
    """
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="search",
                              initializer=faiss.omp_set_num_threads, initargs=(1,))


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


def _check_same_model(encoder: DualEncoder, wanted: ModelIdentity) -> None:
    """The core's one `same_model` rule: anything else would answer silently wrong."""
    differs = wanted.differences(encoder.identity)
    if differs:
        raise ModelMismatch(
            f"the index was built with {wanted.model} (weights {wanted.fingerprint}), but "
            f"{encoder.spec.model} differs in {', '.join(differs)} (weights {encoder.fingerprint}): queries would "
            "be embedded by a different model than the images. Rebuild the index with this model, or point "
            "CLIPSPACE_MODEL at the model the index was built with.")
