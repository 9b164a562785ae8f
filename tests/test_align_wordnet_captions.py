"""WordNet's words in the LiT model's training captions: held-out words never appear, every substitution keeps
the caption true of its scene, Chinese is left alone."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from clipspace.align import world
from clipspace.align.datasets import WorldOptions, WorldPairs
from clipspace.align.paraphrases import EN_COLOURS, EN_SHAPES
from clipspace.align.wordnet_captions import HELD_OUT, with_wordnet_words, wordnet_lexicon
from clipspace.fusion.negatives import load_lexicon

pytestmark = pytest.mark.skipif(load_lexicon().source == "fallback",
                                reason="Debian's wordnet-base or nltk is not installed")


def _scenes(count: int = 200) -> list[world.Scene]:
    return [world.sample_scene(7, "train", index) for index in range(count)]


def _tokens(text: str) -> set[str]:
    return set(re.split(r"[^a-z]+", text.lower()))


def test_the_paraphrase_evaluations_words_are_held_out_of_the_lexicon():
    lexicon = wordnet_lexicon()
    assert {word for words in (*EN_COLOURS.values(), *EN_SHAPES.values()) for word in words} == HELD_OUT
    for word in lexicon.words():
        assert not HELD_OUT & set(re.split(r"[ \-]", word)), word
    # WordNet does list some of them under the world's words: they were removed, not absent
    assert "scarlet" not in lexicon.colours["red"] and "cerise" in lexicon.colours["red"]
    assert "disk" in lexicon.shapes["circle"]


def test_captions_with_every_word_substituted_never_contain_a_held_out_word():
    lexicon, rng = wordnet_lexicon(), np.random.default_rng(0)
    for scene in _scenes():
        caption = with_wordnet_words(world.sample_caption(scene, rng, language="en", framed=True), rng, 1.0, lexicon)
        assert not HELD_OUT & _tokens(caption), caption


def test_a_substitution_keeps_the_caption_true_of_its_scene():
    """The substituted caption is the world's caption with each colour or shape word replaced by a word of the same
    colour or shape (and its article mended), so whatever the world's caption said of the scene still holds."""
    lexicon, rng = wordnet_lexicon(), np.random.default_rng(1)
    classes = {**lexicon.colours, **lexicon.shapes}
    changed = 0
    for scene in _scenes():
        original = world.sample_caption(scene, rng, language="en", framed=True)
        substituted = with_wordnet_words(original, rng, 0.5, lexicon)
        pattern, end = "", 0
        for match in re.finditer(r"\b(?:(?:a|an|A|An) )?(" + "|".join(classes) + r")\b(?!-)", original):
            word = match.group(1)
            alternatives = "|".join(re.escape(w) for w in (word, *classes[word]))
            article = r"(?:[Aa]n? )" if match.group(0) != word else ""
            pattern += re.escape(original[end:match.start()]) + article + f"(?:{alternatives})"
            end = match.end()
        pattern += re.escape(original[end:])
        assert re.fullmatch(pattern, substituted), (original, substituted)
        changed += substituted != original
    assert changed > 50  # share 0.5: most captions hold a colour or shape word, and half of those words change


def test_a_red_circle_becomes_red_and_circular_words_with_a_mended_article():
    lexicon = wordnet_lexicon()
    for seed in range(20):
        text = with_wordnet_words("an orange circle", np.random.default_rng(seed), 1.0, lexicon)
        article, rest = text.split(" ", 1)
        assert article == ("an" if rest[0] in "aeiou" else "a")
        assert any(rest == f"{c} {s}" for c in lexicon.colours["orange"] for s in lexicon.shapes["circle"])


def test_chinese_captions_and_a_zero_share_are_left_alone():
    lexicon, rng = wordnet_lexicon(), np.random.default_rng(2)
    assert with_wordnet_words("一个红色的圆形", rng, 1.0, lexicon) == "一个红色的圆形"
    assert with_wordnet_words("a red circle on the left", rng, 0.0, lexicon) == "a red circle on the left"
    assert with_wordnet_words("two red circles and a five-pointed star", rng, 1.0, lexicon).endswith(
        "circles and a five-pointed star")


def test_the_world_pool_draws_wordnet_captions_when_its_share_is_set():
    scenes = _scenes(64)
    pixels = torch.zeros(len(scenes), 3, 8, 8, dtype=torch.uint8)

    def captions(share: float) -> list[str]:
        pool = WorldPairs(scenes, pixels, lambda x: x, lambda texts: texts, seed=0,
                          options=WorldOptions(caption_language="en", wordnet_share=share))
        return [pool[index][1] for index in range(len(scenes))]

    single_words = {word for word in wordnet_lexicon().words() if " " not in word and "-" not in word}

    def with_wordnet_word(texts: list[str]) -> int:  # the world's own captions say "disc" and "box" too
        return sum(bool(_tokens(text) & single_words) for text in texts)

    assert with_wordnet_word(captions(1.0)) > with_wordnet_word(captions(0.0)) + 20
