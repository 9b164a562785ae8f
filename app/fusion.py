"""Fusion beside search, for one encoder: its zero-shot templates and scale, and re-ranking with its matcher."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from app import metrics
from app.encoding import EncoderSlot
from app.served_index import ServedIndex
from clipspace.errors import ClipspaceError, RerankUnavailable
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.rerank import RERANK_DEPTH, find_reranker, model_folder
from clipspace.images import load_image
from clipspace.index.records import SearchHit

log = logging.getLogger(__name__)


class Fusion:
    """What composed queries and zero-shot labels need of a model beyond its two towers.

    Made once per encoder (finding the matcher reads its file), shared by every index version it serves.
    """

    def __init__(self, slot: EncoderSlot) -> None:
        self.slot = slot
        self.reranker, self.rerank_detail = find_reranker(slot.encoder)
        # prompt ensembles per language: the model's own (`zero_shot_templates.json`) over the generic ones
        self.templates: Mapping[str, tuple[str, ...]] = zero_shot.model_templates(model_folder(slot.encoder))

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with: zero-shot softmax uses it, not a guess."""
        return float(self.slot.encoder.model.logit_scale.detach().float().exp())

    @property
    def rerank_available(self) -> bool:
        return self.reranker is not None

    def rerank_texts(self, terms: Sequence, target: str) -> list[tuple[str, float]]:
        """The texts the matcher reads for a query (its positive text terms), or why it cannot re-rank."""
        if self.reranker is None:
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
        reranker, version = self.reranker, index.version
        words, weights = [text for text, _ in texts], [weight for _, weight in texts]

        def score() -> list[tuple[SearchHit, float]]:
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
