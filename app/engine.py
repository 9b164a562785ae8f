"""What the service serves: the published index version and the encoder it was built with, swapped live."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from app.batching import MicroBatcher
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder, with_absolute_paths
from clipspace.errors import ClipspaceError, ModelMismatch
from clipspace.images import load_image
from clipspace.settings import Settings
from clipspace.store import IndexVersion, SearchHit, current_version_name

log = logging.getLogger(__name__)

PROBE_TEXT = "a photo"


class EncoderSlot:
    """An encoder with its two micro-batchers; shared by every index version built with the same model."""

    def __init__(self, encoder: DualEncoder, executor: ThreadPoolExecutor, max_batch: int) -> None:
        self.encoder = encoder
        self.texts = MicroBatcher(encoder.embed_texts, executor, max_batch)
        self.pixels = MicroBatcher(lambda batch: encoder.embed_pixels(torch.stack(list(batch))), executor,
                                   max_batch)


@dataclass(frozen=True)
class Engine:
    """One consistent pair: a request takes an Engine once and uses it to the end, even across a swap."""

    version: IndexVersion
    slot: EncoderSlot

    @property
    def model_name(self) -> str:
        return self.version.model["model"]

    async def embed_text(self, text: str) -> np.ndarray:
        return await self.slot.texts.embed(text)

    async def embed_image(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Decode and preprocess on a worker thread (never the event loop), then join the pixel batch.

        JPEGs are drafted exactly as the builder drafts them, so a file sent back as a query embeds to the
        very vector stored for it.
        """
        encoder = self.slot.encoder
        pixels = await run_in_threadpool(lambda: encoder.preprocess(
            load_image(data, max_pixels=max_pixels, draft_size=encoder.image_size)))
        return await self.slot.pixels.embed(pixels)

    async def search(self, vector: np.ndarray, k: int, target: str) -> list[SearchHit]:
        return await run_in_threadpool(self.version.search, vector, k, target)

    async def probe(self) -> None:
        """Prove the model answers: embed a text and check it is a unit vector of the index's dimension."""
        vector = await self.embed_text(PROBE_TEXT)
        if vector.shape != (self.version.dim,) or not np.isfinite(vector).all():
            raise ModelMismatch(f"the model answered a vector of shape {vector.shape}; the index holds "
                                f"{self.version.dim}-d vectors")

    def image_file(self, item_id: int) -> Path | None:
        """The file of an indexed item; None for ids the index does not hold (no client path ever reaches disk)."""
        item = self.version.item(item_id)
        if item is None:
            return None
        root = self.version.corpus_root.resolve()
        path = (root / item.path).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


class EngineHolder:
    """Loads the version named by INDEX_DIR/current and its model, and follows `current` as it moves.

    A version that fails to load (model mismatch, corrupt files) is reported by /readyz and never replaces
    a working engine; it is not retried until `current` names another version.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.problem: str | None = "starting: the index has not been loaded yet"
        self._tried: str | None = None
        self._slot: EncoderSlot | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        faiss.omp_set_num_threads(1)  # one query at a time: OpenMP threads would only steal the model's cores

    def refresh(self) -> None:
        """Load `current` if it names a version not yet tried. Blocking: call it off the event loop."""
        with self._lock:
            name = current_version_name(self.settings.index_dir)
            if name is None:
                self.problem = (f"no index published at {self.settings.index_dir} yet: build one with "
                                f"`python -m index_builder --index {self.settings.index_dir}`")
                return
            if name == self._tried:
                return
            self._tried = name
            try:
                version = IndexVersion(Path(self.settings.index_dir) / "versions" / name)
                slot = self._slot_for(version)
            except ClipspaceError as error:
                self.problem = f"index version {name}: {error}"
                log.error("not serving %s", self.problem)
                return
            self.engine, self.problem = Engine(version, slot), None
            log.info("serving index version %s (%d items, model %s)", name, version.count,
                     version.model["model"])

    async def follow(self) -> None:
        """Poll `current` forever; a newly published version is picked up without a restart."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await run_in_threadpool(self.refresh)
            except Exception:  # a watcher that dies would silently freeze the index; log and keep polling
                log.exception("index refresh failed")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _slot_for(self, version: IndexVersion) -> EncoderSlot:
        wanted = version.model
        spec = with_absolute_paths(ModelSpec(
            model=self.settings.model or wanted["model"], pretrained=wanted["pretrained"],
            precision=wanted["precision"], device=self.settings.device, seed=wanted["seed"] or 0))
        reuse = self._slot is not None and self._slot.encoder.spec == spec
        encoder = self._slot.encoder if reuse else load_encoder(spec, threads=self.settings.threads)
        self._check_same_model(encoder, wanted)
        if not reuse:
            self._slot = EncoderSlot(encoder, self._executor, self.settings.max_batch)
        return self._slot

    @staticmethod
    def _check_same_model(encoder: DualEncoder, wanted: dict) -> None:
        if encoder.fingerprint != wanted["fingerprint"] or encoder.dim != wanted.get("dim", encoder.dim):
            raise ModelMismatch(
                f"the index was built with {wanted['model']} (weights {wanted['fingerprint']}), but "
                f"{encoder.spec.model} has weights {encoder.fingerprint}: queries would be embedded by a "
                "different model than the images. Rebuild the index with this model, or point "
                "CLIPSPACE_MODEL at the model the index was built with.")
