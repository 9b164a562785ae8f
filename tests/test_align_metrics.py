"""Retrieval metrics on hand-built cases whose right answers can be worked out on paper."""

from __future__ import annotations

import math

import numpy as np

from clipspace.align import world
from clipspace.align.evaluate import attribute_precision, precision_at_k, recall_at_k


def embedder(vectors: dict[str, list[float]]):
    return lambda texts: np.array([vectors[text] for text in texts], dtype=np.float32)


# Three images on a 2-D unit circle; the first two carry the identical caption "red".
IMAGES = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
CAPTIONS = ["red", "red", "blue"]
TEXTS = embedder({"red": [0.6, 0.8], "blue": [1.0, 0.0]})


def test_text_to_image_counts_any_image_with_the_identical_caption_as_a_hit() -> None:
    metrics = recall_at_k(IMAGES, CAPTIONS, TEXTS, ks=(1, 2, 3))
    # "red" ranks image 1 first (a "red" image, though not image 0): hit at 1.
    # "blue" ranks images 0, 1, 2: its only image is third.
    assert metrics["text_to_image_R@1"] == 0.5
    assert metrics["text_to_image_R@2"] == 0.5
    assert metrics["text_to_image_R@3"] == 1.0


def test_image_to_text_ranks_distinct_captions_and_hits_on_the_identical_string() -> None:
    metrics = recall_at_k(IMAGES, CAPTIONS, TEXTS, ks=(1, 2))
    # image 0 prefers "blue" (miss), image 1 "red" (hit), image 2 "red" (miss); two distinct captions in all.
    assert math.isclose(metrics["image_to_text_R@1"], 1 / 3)
    assert metrics["image_to_text_R@2"] == 1.0


def test_duplicated_captions_are_asked_once() -> None:
    seen = []

    def recording(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return TEXTS(texts)

    recall_at_k(IMAGES, CAPTIONS, recording)
    assert seen == ["red", "blue"]


def test_precision_at_k_on_a_hand_built_ranking() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6]] * 4)
    relevant = np.array([[True, False, True, True],     # top 2: one of two relevant
                         [False, False, False, True],   # one relevant item, ranked fourth
                         [False, False, False, False],  # nothing relevant: undefined, not zero
                         [True, True, True, True]])
    assert np.allclose(precision_at_k(scores, relevant, k=2)[[0, 1, 3]], [0.5, 0.0, 1.0])
    assert math.isnan(precision_at_k(scores, relevant, k=2)[2])
    # fewer relevant items than k: the denominator is what could have been found
    assert precision_at_k(scores, relevant, k=10)[1] == 1.0
    assert math.isclose(precision_at_k(scores, relevant, k=3)[0], 2 / 3)


def test_attribute_precision_is_perfect_for_an_oracle_and_skips_absent_combos() -> None:
    combos = [(colour, shape) for colour in world.COLOURS for shape in world.SHAPES]
    scenes = [(world.SceneObject("circle", "red", "small", "left"),),
              (world.SceneObject("circle", "red", "large", "top"), world.SceneObject("star", "blue", "small", "left")),
              (world.SceneObject("square", "green", "large", "center"),)]

    def one_hot(present: set[tuple[str, str]]) -> np.ndarray:
        vector = np.array([combo in present for combo in combos], dtype=np.float32)
        return vector / np.linalg.norm(vector)

    images = np.stack([one_hot({(o.colour, o.shape) for o in objects}) for objects in scenes])
    query_vectors = {world.attribute_query(c, s, lang): one_hot({(c, s)}) for c, s in combos for lang in ("en", "zh")}
    report = attribute_precision(images, scenes, lambda texts: np.stack([query_vectors[t] for t in texts]), k=10)
    for language in ("en", "zh"):
        assert report[language]["queries"] == 3
        assert report[language]["mean_P@10"] == 1.0
        assert report[language]["min_P@10"] == 1.0


def test_attribute_precision_asks_every_phrasing_and_names_the_worst_query() -> None:
    scenes = [(world.SceneObject("circle", "red", "small", "left"),),
              (world.SceneObject("star", "blue", "large", "top"),)]
    images = np.eye(2, dtype=np.float32)
    right = {"red circle": [1.0, 0.0], "blue star": [0.0, 1.0]}
    phrasings = {"en": (lambda c, s: f"{c} {s}", lambda c, s: f"wrong {c} {s}")}

    def texts(queries: list[str]) -> np.ndarray:
        # the plain phrasing points at the right image, the "wrong" one at the other image
        return np.array([right.get(q, right.get(q.removeprefix("wrong "), [0.0, 0.0])[::-1]) for q in queries])

    report = attribute_precision(images, scenes, texts, k=1, phrasings=phrasings)
    assert set(report) == {"en"}
    assert report["en"]["queries"] == 4  # two present combos, two phrasings each
    assert report["en"]["mean_P@1"] == 0.5
    assert report["en"]["worst_query"].startswith("wrong ")
