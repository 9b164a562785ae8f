"""Fusion beside search, for one encoder: its zero-shot templates and scale, and re-ranking with its matcher.

The matcher runs on torch. Beside towers on torch it shares their model; beside towers on ONNX Runtime, torch and
a torch copy of the model are loaded at the first re-rank asked for, so a service that never re-ranks never
imports torch (what that costs in memory: docs/decisions.md, "Serving on ONNX Runtime").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app import metrics
from app.encoding import EncoderSlot
from app.runtime import load_torch_model
from app.served_index import ServedIndex
from clipspace.errors import ClipspaceError, RerankUnavailable
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.beside import RERANK_DEPTH, matcher_file, model_folder, no_matcher_reason
from clipspace.images import load_image
from clipspace.index.records import SearchHit
from clipspace.runtimes import TORCH

if TYPE_CHECKING:
    from clipspace.fusion.rerank import Reranker

log = logging.getLogger(__name__)


class Fusion:
    """What composed queries and zero-shot labels need of a model beyond its two towers.

    Made once per encoder (finding the matcher reads its file), shared by every index version it serves. The matcher
    is the one trained for the encoder's weights beside the index (`index_dir`), else the one beside a local-dir:
    model's weights (clipspace.fusion.beside.matcher_file).
    """

    def __init__(self, slot: EncoderSlot, threads: int | None = None, index_dir: Path | None = None) -> None:
        self.slot, self._threads, self._index_dir = slot, threads, index_dir
        self._reranker: Reranker | None = None
        if slot.encoder.runtime == TORCH:
            self._reranker, self.rerank_detail = self._find_reranker(slot.encoder, index_dir)
            self._looked = True
        else:
            self._looked, self.rerank_detail = _matcher_beside(slot, index_dir)
        # prompt ensembles per language: the model's own (`zero_shot_templates.json`) over the generic ones
        self.templates: Mapping[str, tuple[str, ...]] = zero_shot.model_templates(model_folder(slot.encoder))

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with: zero-shot softmax uses it, not a guess."""
        return self.slot.encoder.logit_scale

    @property
    def rerank_available(self) -> bool:
        return self._reranker is not None or not self._looked

    def rerank_texts(self, terms: Sequence, target: str) -> list[tuple[str, float]]:
        """The texts the matcher reads for a query (its positive text terms), or why it cannot re-rank."""
        if not self.rerank_available:
            raise RerankUnavailable(f"re-ranking is not available for this index: {self.rerank_detail}")
        if target != "image":
            raise RerankUnavailable("re-ranking scores images: it needs target 'image'")
        texts = [(term.text, term.weight) for term in terms if term.text is not None and term.weight > 0]
        if not texts:
            raise RerankUnavailable("re-ranking reads the query's text: add a text term with a positive weight")
        return texts

    @staticmethod
    def rerank_depth(k: int) -> int:
        return max(k, RERANK_DEPTH)

    async def rerank(self, texts: list[tuple[str, float]], hits: list[SearchHit],
                     index: ServedIndex) -> list[tuple[SearchHit, float]]:
        """Re-score candidates on the model thread (never beside another forward pass); best first.

        The patch tokens come from the index version when it keeps them for this matcher; otherwise each
        candidate is decoded and embedded again, and one whose file is gone is left out, as /images would 404.
        """
        version = index.version
        words, weights = [text for text, _ in texts], [weight for _, weight in texts]

        def score() -> list[tuple[SearchHit, float]]:
            reranker = self._torch_reranker()
            cached = (version.patch_tokens([hit.id for hit in hits])
                      if version.token_shape == reranker.token_shape else {})
            if cached:
                found = [hit for hit in hits if hit.id in cached]
                scores = reranker.score_patches(words, weights, np.stack([cached[hit.id] for hit in found]),
                                                np.array([hit.score for hit in found]))
            else:
                found, images = self._candidate_images(hits, index)
                scores = reranker.score(words, weights, images, np.array([hit.score for hit in found]))
            return sorted(zip(found, scores.tolist(), strict=True), key=lambda pair: -pair[1])

        with metrics.timed("rerank"):
            return await self.slot.on_model_thread(score)

    def _candidate_images(self, hits: list[SearchHit], index: ServedIndex) -> tuple[list[SearchHit], list]:
        found, images = [], []
        for hit in hits:
            try:
                images.append(load_image(index.image_file(hit.id), draft_size=self.slot.encoder.image_size))
            except ClipspaceError as error:
                log.warning("re-ranking skips image %d: %s", hit.id, error)
                continue
            found.append(hit)
        return found, images

    def _torch_reranker(self) -> Reranker:
        """The reranker, loaded on first use beside towers on ONNX Runtime (on the model thread, like any model)."""
        if not self._looked:
            log.info("loading torch and the model for the matcher: the towers stay on ONNX Runtime")
            self._reranker, self.rerank_detail = self._find_reranker(
                load_torch_model(self.slot.encoder.spec, self._threads), self._index_dir)
            self._looked = True
        if self._reranker is None:
            raise RerankUnavailable(f"re-ranking is not available for this index: {self.rerank_detail}")
        return self._reranker

    @staticmethod
    def _find_reranker(encoder: object, index_dir: Path | None) -> tuple[Reranker | None, str]:
        from clipspace.fusion.rerank import find_reranker  # torch

        return find_reranker(encoder, index_dir)


def _matcher_beside(slot: EncoderSlot, index_dir: Path | None) -> tuple[bool, str]:
    """(looked, detail): nothing to look for when there is no matcher file for the model (read without torch)."""
    path = matcher_file(slot.encoder, index_dir)
    if path is None:
        return True, no_matcher_reason(slot.encoder, index_dir)
    return False, (f"cross-attention matcher {path}, loaded on torch at the first re-rank (the towers run on "
                   "ONNX Runtime)")
