"""Paraphrased attribute queries: every combo has them, and none of their words is a world caption's."""

from __future__ import annotations

import re

import numpy as np

from clipspace.align import paraphrases, world


def _world_captions(n_scenes: int = 1500) -> list[str]:
    rng = np.random.default_rng(0)
    captions = []
    for index in range(n_scenes):
        scene = world.sample_scene(0, "train", index)
        captions += [world.canonical_caption(scene), world.canonical_caption_zh(scene)]
        captions += [world.sample_caption(scene, rng) for _ in range(8)]
    return captions


def test_english_paraphrases_use_no_word_of_the_worlds_captions_but_articles() -> None:
    vocabulary = {word for caption in _world_captions() for word in re.findall(r"[a-z]+", caption.lower())}
    for phrase in paraphrases.PHRASINGS["en"]:
        for colour in world.COLOURS:
            for shape in world.SHAPES:
                words = set(phrase(colour, shape).split()) - {"a", "an"}
                assert not words & vocabulary, phrase(colour, shape)


def test_chinese_paraphrase_words_never_occur_in_the_worlds_captions() -> None:
    text = "\n".join(_world_captions())
    for words in (*paraphrases.ZH_COLOURS.values(), *paraphrases.ZH_SHAPES.values()):
        for word in words:
            assert word not in text, word


def test_every_colour_and_shape_has_a_paraphrase_per_variant() -> None:
    for table in (paraphrases.EN_COLOURS, paraphrases.ZH_COLOURS):
        assert set(table) == set(world.COLOURS)
    for table in (paraphrases.EN_SHAPES, paraphrases.ZH_SHAPES):
        assert set(table) == set(world.SHAPES)
    queries = {phrase(c, s) for phrases in paraphrases.PHRASINGS.values() for phrase in phrases
               for c in world.COLOURS for s in world.SHAPES}
    assert len(queries) == 2 * 2 * len(world.COLOURS) * len(world.SHAPES)
