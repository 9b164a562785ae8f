"""Caption families: each says what is true of the scene, and its hard negatives are twins it can tell apart."""

from __future__ import annotations

import numpy as np
import pytest

from clipspace.align import world
from clipspace.fusion import phrasings
from clipspace.fusion.features import make_family_twins
from clipspace.fusion.phrasings import FAMILIES, bag, caption, family_twin, is_negative
from clipspace.fusion.twins import colour_swap, count_change, position_swap, size_swap

BACKGROUND = world.Background("plain", ((240, 240, 240), (240, 240, 240)), 0.0)
SCENE = world.Scene((world.SceneObject("circle", "red", "large", "left"),
                     world.SceneObject("square", "orange", "small", "right")), BACKGROUND, 1)
PAIR = world.Scene((world.SceneObject("star", "blue", "small", "left"),
                    world.SceneObject("star", "blue", "small", "top"),
                    world.SceneObject("cross", "green", "large", "right")), BACKGROUND, 2)

EXPECTED = {
    "canonical": ("a large red circle on the left and a small orange square on the right",
                  "左边有一个大的红色圆形，右边有一个小的橙色正方形"),
    "reversed": ("a small orange square on the right and a large red circle on the left",
                 "右边有一个小的橙色正方形，左边有一个大的红色圆形"),
    "no sizes": ("a red circle on the left and an orange square on the right",
                 "左边有一个红色的圆形，右边有一个橙色的正方形"),
    "no places": ("a large red circle and a small orange square", "一个大的红色圆形和一个小的橙色正方形"),
    "X and Y": ("a red circle and an orange square", "一个红色的圆形和一个橙色的正方形"),
    "X, Y": ("a red circle, an orange square", "一个红色的圆形，一个橙色的正方形"),
    "X next to Y": ("a red circle next to an orange square", "一个红色的圆形旁边有一个橙色的正方形"),
    "X with Y": ("a red circle with an orange square", "一个红色的圆形，还有一个橙色的正方形"),
    "counts": ("one red circle and one orange square", "一个红色的圆形和一个橙色的正方形"),
    "framed": ("a photo of a red circle and an orange square", "照片里是一个红色的圆形和一个橙色的正方形"),
}


def test_every_family_has_an_example():
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("family", EXPECTED)
def test_each_family_describes_the_scene_in_its_own_words(family):
    assert (caption(SCENE, family, "en"), caption(SCENE, family, "zh")) == EXPECTED[family]


def test_counts_say_how_many_objects_share_a_colour_and_shape():
    assert caption(PAIR, "counts", "en") == "two blue stars and one green cross"
    assert caption(PAIR, "counts", "zh") == "两个蓝色的星形和一个绿色的十字形"


def test_three_objects_are_joined_as_a_list():
    assert caption(PAIR, "X next to Y", "en") == "a blue star next to a blue star and a green cross"
    assert caption(PAIR, "X, Y", "zh") == "一个蓝色的星形，一个蓝色的星形，一个绿色的十字形"


def twin_of(kind: str) -> world.Scene:
    maker = {"colour_swap": colour_swap, "position_swap": position_swap, "size_swap": size_swap}[kind]
    return maker(SCENE, np.random.default_rng(0))


@pytest.mark.parametrize("family", EXPECTED)
@pytest.mark.parametrize("kind", ["colour_swap", "position_swap", "size_swap"])
def test_a_swap_is_a_negative_exactly_where_the_family_says_the_swapped_attribute(family, kind):
    says = {"colour_swap": True, "position_swap": FAMILIES[family].positions, "size_swap": FAMILIES[family].sizes}
    assert is_negative(SCENE, twin_of(kind), kind, family) == says[kind]


@pytest.mark.parametrize("family", EXPECTED)
@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_swap_negative_differs_from_the_caption_but_has_its_bag_of_words(family, language):
    for kind in FAMILIES[family].kinds:
        if kind == "count_change":
            continue
        positive, negative = caption(SCENE, family, language), caption(twin_of(kind), family, language)
        assert negative != positive
        assert bag(negative, language) == bag(positive, language)


def test_a_position_swap_without_places_is_a_paraphrase_not_a_negative():
    twin = twin_of("position_swap")
    assert caption(twin, "no places", "en") == "a small orange square and a large red circle"
    assert not is_negative(SCENE, twin, "position_swap", "no places")


def test_a_colour_swap_that_regroups_counts_is_not_a_bag_of_words_negative():
    twin = world.Scene((PAIR.objects[0], world.SceneObject("star", "green", "small", "top"),
                        world.SceneObject("cross", "blue", "large", "right")), BACKGROUND, 2)
    assert caption(twin, "counts", "en") == "one blue star, one green star and one blue cross"
    assert not is_negative(PAIR, twin, "colour_swap", "counts")
    assert is_negative(PAIR, twin, "colour_swap", "X and Y")


@pytest.mark.parametrize("family", EXPECTED)
def test_a_changed_count_is_a_negative_in_every_family(family):
    twin = count_change(SCENE, np.random.default_rng(1))
    assert is_negative(SCENE, twin, "count_change", family)
    assert caption(twin, family, "en") != caption(SCENE, family, "en")


@pytest.mark.parametrize("family", EXPECTED)
def test_family_twins_are_drawn_only_among_the_kinds_the_family_expresses(family):
    rng = np.random.default_rng(3)
    kinds = {family_twin(SCENE, family, rng)[0] for _ in range(40)}
    assert kinds == set(FAMILIES[family].kinds)
    assert kinds <= set(phrasings.SWAP_KINDS) | {"count_change"}


def test_family_first_pairs_are_mostly_swaps_spread_over_every_family_and_each_a_hard_negative():
    scenes, twins, kinds, families = make_family_twins(300, 11, "train", swap_share=0.8)
    assert set(families) == set(FAMILIES)
    swaps = sum(kind in phrasings.SWAP_KINDS for kind in kinds) / len(kinds)
    assert 0.5 < swaps < 0.95  # scenes that allow no swap are passed over, one-object ones allow only counts
    bare = [kind for kind, family in zip(kinds, families, strict=True) if family == "X and Y"]
    assert set(bare) == {"colour_swap", "count_change"}  # all a family without places or sizes can tell apart
    assert all(is_negative(*pair) for pair in zip(scenes, twins, kinds, families, strict=True))
    assert make_family_twins(300, 11, "train", swap_share=0.8)[3] == families  # reproducible


def test_a_family_twin_can_be_restricted_to_swaps():
    rng = np.random.default_rng(4)
    assert {family_twin(SCENE, "canonical", rng, phrasings.SWAP_KINDS)[0] for _ in range(40)} <= set(
        phrasings.SWAP_KINDS)
    assert family_twin(SCENE, "X and Y", rng, ("position_swap",)) is None  # a family without places cannot
