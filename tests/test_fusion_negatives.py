"""Hard negatives rewritten from a caption's text: each kind with an example, and what is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from clipspace.fusion.negatives import KINDS, load_lexicon, text_negatives


def negatives(caption: str, **lexicon) -> dict[str, str]:
    return {n.kind: n.text for n in text_negatives(caption, np.random.default_rng(0), **lexicon)}


def test_attribute_swap_exchanges_colours_between_the_nouns_they_modify():
    made = negatives("a red cube on top of a blue box")
    assert made["attribute_swap"] == "a blue cube on top of a red box"


def test_attribute_swap_exchanges_only_words_of_one_class():
    swapped = negatives("a small red circle and a large blue square")["attribute_swap"]
    assert swapped in ("a large red circle and a small blue square", "a small blue circle and a large red square")


def test_relation_reversal_exchanges_the_two_things_an_asymmetric_relation_joins():
    assert negatives("a wooden chair to the left of a metal table")["relation_swap"] == \
        "a metal table to the left of a wooden chair"


def test_relation_reversal_exchanges_the_places_of_two_things():
    made = negatives("a small red circle on the left and a large blue square at the top")
    assert made["relation_swap"] == "a small red circle at the top and a large blue square on the left"


def test_a_lone_place_is_turned_to_its_opposite():
    assert negatives("a small yellow hexagon at the bottom")["relation_swap"] == "a small yellow hexagon at the top"


def test_number_change_changes_a_count_in_words_or_digits():
    assert negatives("two dogs")["number_change"] == "three dogs"
    assert negatives("3 cars")["number_change"] in ("4 cars", "2 cars")


def test_a_caption_with_nothing_to_negate_has_no_negatives():
    assert negatives("a sunny beach") == {}
    assert negatives("日落") == {}


def test_every_negative_differs_from_its_caption_and_is_one_of_the_kinds():
    captions = ["a small purple circle on the left, a small purple circle on the right", "one cat on a red mat",
                "a large green star in the center", "a red circle and a red square"]
    for caption in captions:
        for negative in text_negatives(caption, np.random.default_rng(1)):
            assert negative.kind in KINDS and negative.text != caption


def test_chinese_captions_in_the_worlds_grammar_get_each_kind():
    made = negatives("左边有一个小的红色圆形，右边有一个大的蓝色正方形")
    assert made["attribute_swap"] in ("左边有一个小的蓝色圆形，右边有一个大的红色正方形",
                                      "左边有一个大的红色圆形，右边有一个小的蓝色正方形")
    assert made["relation_swap"] == "右边有一个小的红色圆形，左边有一个大的蓝色正方形"
    assert made["number_change"] in ("左边有两个小的红色圆形，右边有一个大的蓝色正方形",
                                     "左边有一个小的红色圆形，右边有两个大的蓝色正方形")


def test_without_wordnet_the_fallback_lists_still_swap_colours(tmp_path):
    fallback = load_lexicon(tmp_path)
    assert fallback.source == "fallback"
    made = negatives("a red circle next to a blue square", lexicon=fallback)
    assert made == {"attribute_swap": "a blue circle next to a red square"}


@pytest.mark.skipif(load_lexicon().source == "fallback", reason="Debian's wordnet-base or nltk is not installed")
def test_wordnet_tells_adjectives_from_nouns_beyond_the_fallback_lists():
    assert negatives("a wooden chair near a metal table")["attribute_swap"] == "a metal chair near a wooden table"
    assert negatives("an old man with a young dog")["attribute_swap"] == "a young man with an old dog"  # articles agree
