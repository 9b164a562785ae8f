"""The serving state: the index version named by `current` with the encoder it was built with, swapped live."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.encoding import Decoding, EncoderSlot
from app.fusion import Fusion
from app.runtime import check_same_model, open_encoder
from app.served_index import ServedIndex, search_executor
from clipspace.allocator import return_freed_memory
from clipspace.errors import ClipspaceError, ModelLoadError, ModelUnavailable
from clipspace.identity import ModelSpec, with_absolute_paths
from clipspace.index.publish import current_version_name, open_version
from clipspace.index.version import IndexVersion
from clipspace.runtimes import Encoder
from clipspace.settings import Settings

log = logging.getLogger(__name__)

PROBE_TEXT = "a photo"


@dataclass(frozen=True)
class Serving:
    """One consistent state: a request takes it once and uses it to the end, even across a swap."""

    index: ServedIndex
    encoder: EncoderSlot
    fusion: Fusion

    @property
    def model_name(self) -> str:
        return self.index.version.model.model

    async def probe(self) -> None:
        """Prove the model answers: embed a text and check it is a unit vector of the index's dimension."""
        vector = await self.encoder.embed_text(PROBE_TEXT)
        if vector.shape != (self.index.version.dim,) or not np.isfinite(vector).all():
            raise ModelUnavailable(f"the model answered a vector of shape {vector.shape}; the index holds "
                                   f"{self.index.version.dim}-d vectors")


class ServingHolder:
    """Loads the version named by INDEX_DIR/current and its model, and follows `current` as it moves.

    A version that fails to load is reported by /readyz and never replaces a working state. A failure that
    may pass (a model that could not be loaded, an unexpected error) is retried after RETRY_AFTER_S; a
    version that is wrong (model mismatch, corrupt files) is not retried until `current` names another.
    """

    RETRY_AFTER_S = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serving: Serving | None = None
        self.problem: str | None = "starting: loading the index and its model"
        self._tried: str | None = None
        self._retry_at = 0.0
        self._model: tuple[EncoderSlot, Fusion] | None = None
        self._retired: weakref.ref[Encoder] | None = None  # the model a switch replaced, until it is freed
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._searching = search_executor()
        self._decoding = Decoding(settings.max_image_pixels)  # one bound across encoders: uploads and thumbs
        metrics.libraries_loaded({"faiss": faiss.__version__})  # the model's runtime joins when it is chosen

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
                version = open_version(self.settings.index_dir, name)
                slot, fusion = self._model_for(version)
            except Exception as error:
                self._refused(name, error)
                return
            metrics.index_served(name, version.count, version.model.model)
            self.serving, self.problem = Serving(ServedIndex(version, self._searching), slot, fusion), None
            log.info("serving index version %s (%d items, model %s)", name, version.count, version.model.model)

    async def follow(self) -> None:
        """Load the index now, then poll `current` forever: new versions are picked up without a restart.

        After a switch to another model, the first poll that finds the old model freed (its last request has
        ended) hands the C heap's freed pages back: its many small tensors leave ~20 MB of a 109 MiB model
        resident otherwise (tests/test_model_switch.py)."""
        while True:
            await run_in_threadpool(self.refresh)
            if self._retired is not None and self._retired() is None:
                self._retired = None
                await run_in_threadpool(return_freed_memory)
            await asyncio.sleep(self.settings.reload_interval_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._searching.shutdown(wait=False, cancel_futures=True)

    def _refused(self, name: str, error: Exception) -> None:
        serving = f" (still serving version {self.serving.index.version.name})" if self.serving else ""
        self.problem = f"index version {name} not loaded{serving}: {error}"
        log.error("%s", self.problem, exc_info=not isinstance(error, ClipspaceError))
        if isinstance(error, ModelLoadError) or not isinstance(error, ClipspaceError):
            self._tried, self._retry_at = None, time.monotonic() + self.RETRY_AFTER_S

    def _model_for(self, version: IndexVersion) -> tuple[EncoderSlot, Fusion]:
        wanted = version.model
        spec = with_absolute_paths(ModelSpec(
            model=self.settings.model or wanted.model, pretrained=self.settings.pretrained or wanted.pretrained,
            precision=wanted.precision, device=self.settings.device, seed=wanted.seed or 0))
        reuse = self._model is not None and self._model[0].encoder.spec == spec
        if reuse:
            check_same_model(self._model[0].encoder, wanted)
            return self._model
        # Loaded on the model thread, where it will run: torch's work stays on one OpenMP team (clipspace.openmp).
        encoder, runtime = self._executor.submit(open_encoder, spec, wanted, self.settings).result()
        return_freed_memory()  # what loading and proving it freed: 6 MB of an int8 ViT-B-32 service's 300
        check_same_model(encoder, wanted)
        if self._model is not None:
            self._retired = weakref.ref(self._model[0].encoder)
        slot = EncoderSlot(encoder, runtime, self._executor, self.settings.max_batch, self._decoding)
        self._model = slot, Fusion(slot, self.settings.threads, self.settings.index_dir)
        return self._model
