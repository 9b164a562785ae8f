"""Retrieval metrics on held-out pairs: recall@k both ways (ties by identical captions) and attribute precision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clipspace.align import world
from clipspace.align.datasets import CaptionedImage, read_pairs
from clipspace.encoder import DualEncoder
from clipspace.images import load_image

RECALL_KS = (1, 5, 10)
PRECISION_K = 10

EmbedTexts = Callable[[list[str]], np.ndarray]


def recall_at_k(image_vectors: np.ndarray, image_captions: Sequence[str], embed_texts: EmbedTexts,
                ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Recall@k text→image and image→text, where every image with an identical caption counts as a hit.

    Captions are deduplicated first: text→image asks one query per distinct caption (a hit if any image
    carrying that exact caption is in the top k), image→text ranks the distinct captions for each image (a hit
    if the image's own caption is in the top k). Without this, two scenes that the caption cannot tell apart
    would each count the other as a miss, and duplicated captions would crowd each other out of the top k.
    """
    captions = list(dict.fromkeys(image_captions))
    caption_index = {caption: i for i, caption in enumerate(captions)}
    owner = np.array([caption_index[caption] for caption in image_captions])
    relevant = owner[None, :] == np.arange(len(captions))[:, None]  # (captions, images)
    scores = embed_texts(captions) @ image_vectors.T
    metrics = {}
    for k in ks:
        metrics[f"text_to_image_R@{k}"] = float(_hits_in_top_k(scores, relevant, k).mean())
        metrics[f"image_to_text_R@{k}"] = float(_hits_in_top_k(scores.T, relevant.T, k).mean())
    return metrics


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int = PRECISION_K) -> np.ndarray:
    """Fraction of each query's top k that is relevant; NaN for a query with nothing relevant.

    When fewer than k items are relevant the denominator is that number, so a perfect ranking scores 1
    on a small corpus too.
    """
    top = _top_k(scores, k)
    hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)
    available = np.minimum(relevant.sum(axis=1), top.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(available > 0, hits / available, np.nan)


Phrasing = Callable[[str, str], str]
# The world's own attribute queries: "a red circle" / "一个红色的圆形".
WORLD_PHRASINGS: dict[str, tuple[Phrasing, ...]] = {
    language: (lambda colour, shape, language=language: world.attribute_query(colour, shape, language),)
    for language in ("en", "zh")}


def attribute_precision(image_vectors: np.ndarray, scene_objects: Sequence[Sequence[world.SceneObject]],
                        embed_texts: EmbedTexts, k: int = PRECISION_K,
                        phrasings: dict[str, Sequence[Phrasing]] | None = None) -> dict[str, object]:
    """Precision@k of every phrasing of every colour × shape present in the images, per language.

    `phrasings` maps a language to the ways of asking for (colour, shape); each way is one query per combo,
    and the mean and the worst are taken over all of them. Default: the world's own queries.
    """
    report: dict[str, object] = {}
    for language, ways in (phrasings or WORLD_PHRASINGS).items():
        queries, relevant = _attribute_queries(scene_objects, ways)
        per_query = precision_at_k(embed_texts(queries) @ image_vectors.T, relevant, k)
        scored = dict(zip(queries, (float(p) for p in per_query), strict=True))
        worst = min(scored, key=scored.get)
        report[language] = {"queries": len(scored), f"mean_P@{k}": float(np.mean(list(scored.values()))),
                            f"min_P@{k}": scored[worst], "worst_query": worst}
    return report


def attribute_parity(reference: tuple[np.ndarray, EmbedTexts], candidate: tuple[np.ndarray, EmbedTexts],
                     scene_objects: Sequence[Sequence[world.SceneObject]], ways: Sequence[Phrasing],
                     k: int = PRECISION_K) -> dict[str, float]:
    """Attribute P@k of two embeddings of one model (image vectors, text embed call): a reference (fp32) and a
    candidate (its int8 copy), and how much of the reference's top k the candidate keeps (recall@k overlap,
    |top k candidate ∩ top k reference| / k), each a mean over the same queries: every way × present combo."""
    queries, relevant = _attribute_queries(scene_objects, ways)
    scores = [embed_texts(queries) @ image_vectors.T for image_vectors, embed_texts in (reference, candidate)]
    tops = [_top_k(score, k) for score in scores]
    overlap = [len(set(mine) & set(theirs)) / k for mine, theirs in zip(tops[1], tops[0], strict=True)]
    return {"queries": len(queries), "reference": float(np.mean(precision_at_k(scores[0], relevant, k))),
            "candidate": float(np.mean(precision_at_k(scores[1], relevant, k))), "overlap": float(np.mean(overlap))}


def _attribute_queries(scene_objects: Sequence[Sequence[world.SceneObject]],
                       ways: Sequence[Phrasing]) -> tuple[list[str], np.ndarray]:
    """Every phrasing of every colour × shape present in the images, and which images hold each (queries, images)."""
    combos = [(colour, shape) for colour in world.COLOURS for shape in world.SHAPES]
    relevant = np.array([[any(o.colour == colour and o.shape == shape for o in objects)
                          for objects in scene_objects] for colour, shape in combos])
    present = [(colour, shape, row) for (colour, shape), row in zip(combos, relevant, strict=True) if row.any()]
    return ([phrase(colour, shape) for phrase in ways for colour, shape, _ in present],
            np.array([row for _ in ways for _, _, row in present]))


def evaluate_pairs(image_vectors: np.ndarray, pairs: Sequence[CaptionedImage], embed_texts: EmbedTexts,
                   phrasings: dict[str, Sequence[Phrasing]] | None = None) -> dict[str, object]:
    """Every metric the pairs allow: recall always, attribute precision when they come from the world."""
    report: dict[str, object] = {"images": len(pairs), "distinct_captions": len({p.caption for p in pairs})}
    report.update(recall_at_k(image_vectors, [p.caption for p in pairs], embed_texts))
    if pairs and all(p.objects is not None for p in pairs):
        report["attribute"] = attribute_precision(image_vectors, [p.objects for p in pairs], embed_texts,
                                                  phrasings=phrasings)
    return report


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k best scores, best first (stable, so exact ties keep index order)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _hits_in_top_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    return np.take_along_axis(relevant, _top_k(scores, k), axis=1).any(axis=1)


def evaluate_encoder(encoder: DualEncoder, source: Path, batch_size: int = 256,
                     phrasings: dict[str, Sequence[Phrasing]] | None = None) -> dict[str, object]:
    """Score a loaded model on pairs from disk, read and embedded exactly as the index builder does."""
    pairs = read_pairs(source)
    vectors = [encoder.embed_images([load_image(pair.path) for pair in pairs[start:start + batch_size]])
               for start in range(0, len(pairs), batch_size)]
    return evaluate_pairs(np.concatenate(vectors), pairs, encoder.embed_texts, phrasings)
