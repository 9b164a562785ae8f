"""The synthetic world: deterministic by seed, a compositional split that training never sees, fitting captions."""

from __future__ import annotations

import colorsys
import itertools
import json
import math
from pathlib import Path

import numpy as np
import open_clip
from PIL import Image

from clipspace.align import heldout, world
from clipspace.align.datasets import read_pairs
from clipspace.cli import main

RECIPES = Path(__file__).resolve().parent.parent / "clipspace/align/recipes"
# The architecture file the shipped model's recipe names.
SHIPPED_RECIPE_ARCH = RECIPES / json.loads((RECIPES / "clipspace-shapes-v5.json").read_text())["model"]


def test_the_same_seed_gives_the_same_scenes_pixels_and_captions() -> None:
    for index in range(20):
        first, second = world.sample_scene(7, "train", index), world.sample_scene(7, "train", index)
        assert first == second
        assert np.array_equal(np.asarray(world.render_scene(first)), np.asarray(world.render_scene(second)))
        assert (world.sample_caption(first, np.random.default_rng(index))
                == world.sample_caption(second, np.random.default_rng(index)))


def test_different_seeds_and_splits_give_different_scenes() -> None:
    base = [world.sample_scene(0, "train", i) for i in range(50)]
    assert base != [world.sample_scene(1, "train", i) for i in range(50)]
    assert base != [world.sample_scene(0, "test", i) for i in range(50)]


def test_scenes_are_never_pixel_identical_even_with_identical_structure() -> None:
    scene = world.sample_scene(0, "train", 0)
    again = world.Scene(scene.objects, scene.background, scene.noise_seed + 1)
    assert not np.array_equal(np.asarray(world.render_scene(scene)), np.asarray(world.render_scene(again)))


def test_compositional_split_never_shares_a_colour_shape_combo_with_training() -> None:
    seen_in_training = set().union(*(world.sample_scene(0, "train", i).combos for i in range(3000)))
    compositional = set().union(*(world.sample_scene(0, "compositional", i).combos for i in range(500)))
    assert compositional == set(world.HELD_OUT_COMBOS)
    assert not compositional & seen_in_training
    assert not set(world.allowed_combos("compositional")) & set(world.allowed_combos("train"))
    # each held-out colour and shape still appears in training, just never together
    assert {c for c, _ in world.HELD_OUT_COMBOS} <= {c for c, _ in seen_in_training}
    assert {s for _, s in world.HELD_OUT_COMBOS} <= {s for _, s in seen_in_training}


def test_every_caption_fits_the_shipped_models_context_without_truncation() -> None:
    context = json.loads(SHIPPED_RECIPE_ARCH.read_text())["text_cfg"]["context_length"]
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the same SimpleTokenizer (BPE vocab 49408)
    rng = np.random.default_rng(0)
    longest = 0
    for index in range(400):
        scene = world.sample_scene(0, "train", index)
        captions = [world.canonical_caption(scene), world.canonical_caption_zh(scene)]
        captions += [world.sample_caption(scene, rng) for _ in range(10)]
        longest = max(longest, *(len(tokenizer.encode(caption)) + 2 for caption in captions))  # + start/end
    assert longest <= context


def test_world_command_writes_images_caption_sidecars_and_a_manifest(tmp_path: Path) -> None:
    assert main(["world", "--out", str(tmp_path), "--n", "6", "--seed", "5", "--split", "test", "--size", "96"]) == 0
    pairs = read_pairs(tmp_path)
    assert [pair.path.name for pair in pairs] == [f"{i:05d}.png" for i in range(6)]
    for index, pair in enumerate(pairs):
        scene = world.sample_scene(5, "test", index)
        assert pair.caption == world.canonical_caption(scene)
        assert pair.path.with_suffix(".txt").read_text(encoding="utf-8").strip() == pair.caption
        assert pair.objects == scene.objects
        assert Image.open(pair.path).size == (96, 96)


def _hsv(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(channel / 255 for channel in rgb))


def _in_family(colour: str, rgb: tuple[int, int, int], slack: float = 0.02) -> bool:
    """Inside the colour's HSV ranges, up to rounding to 8-bit channels; hue compared modulo one turn.

    Black is a value range only: near zero value, rounding makes hue and saturation meaningless.
    """
    (h0, h1), (s0, s1), (v0, v1) = world.COLOUR_RANGES[colour]
    hue, saturation, value = _hsv(rgb)
    if colour == "black":
        return value <= v1 + slack
    in_hue = any(h0 - slack <= h <= h1 + slack for h in (hue, hue - 1.0))
    return in_hue and s0 - slack <= saturation <= s1 + slack and v0 - slack <= value <= v1 + slack


def test_colour_jitter_stays_inside_each_colours_family() -> None:
    rng = np.random.default_rng(0)
    for colour in world.COLOURS:
        for _ in range(200):
            assert _in_family(colour, world.sample_colour(colour, rng)), colour


def test_colour_families_do_not_share_a_hue() -> None:
    chromatic = sorted((world.COLOUR_RANGES[c][0], c) for c in world.COLOURS if c != "black")
    for ((_, end), first), ((start, _), second) in itertools.pairwise(chromatic):
        assert end < start, (first, second)
    assert chromatic[-1][0][1] - 1.0 < chromatic[0][0][0]  # pink's top does not wrap into red


def test_the_canonical_colours_of_both_renderers_belong_to_their_families() -> None:
    for colour in world.COLOURS:
        assert _in_family(colour, world._RGB[colour]), colour
        assert _in_family(colour, heldout.PALETTE[colour]), colour


def test_randomised_renders_are_a_pure_function_of_the_scene() -> None:
    scene = world.sample_scene(0, "train", 3)
    assert np.array_equal(np.asarray(world.render_randomised(scene)), np.asarray(world.render_randomised(scene)))


def test_randomised_renders_vary_size_and_look_of_the_same_content() -> None:
    scene = world.sample_scene(0, "train", 3)
    looks = [world.render_randomised(world.Scene(scene.objects, scene.background, seed)) for seed in range(40)]
    assert len({image.size for image in looks}) >= 3
    assert {image.size[0] for image in looks} <= set(world.RANDOM_IMAGE_SIZES)
    small = [np.asarray(image.resize((48, 48))) for image in looks]
    assert min(np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(small)) > 1


def test_a_shape_twin_changes_one_objects_shape_only_and_stays_in_its_split() -> None:
    allowed = set(world.allowed_combos("train"))
    scenes, about = world.training_scenes(400, 0, "train", twins=True)
    assert len(scenes) == 400
    for first, second, named, named_again in zip(scenes[::2], scenes[1::2], about[::2], about[1::2], strict=True):
        assert named == named_again is not None
        differing = [i for i, (a, b) in enumerate(zip(first.objects, second.objects, strict=True)) if a != b]
        assert differing == [named]
        before, after = first.objects[named], second.objects[named]
        assert before.shape != after.shape and (before.colour, before.size, before.position) == (
            after.colour, after.size, after.position)
        assert (first.background, first.noise_seed) == (second.background, second.noise_seed)
        assert second.combos <= allowed
    assert world.training_scenes(5, 0, "train") == ([world.sample_scene(0, "train", i) for i in range(5)], [None] * 5)


def test_captions_about_an_object_always_name_it_in_the_twin_cases() -> None:
    rng = np.random.default_rng(0)
    scenes, about = world.training_scenes(200, 0, "train", twins=True)
    shape_words = {shape: {*world._EN_SHAPE_SYNONYMS[shape], world._EN_PLURAL[shape], *world._ZH_SHAPE_SYNONYMS[shape]}
                   for shape in world.SHAPES}
    for scene, named in zip(scenes, about, strict=True):
        shape = scene.objects[named].shape
        for _ in range(20):
            caption = world.sample_caption(scene, rng, named)
            assert any(word in caption for word in shape_words[shape]), (caption, shape)


def test_english_only_captions_have_no_chinese_and_leave_the_default_draws_unchanged() -> None:
    scenes = [world.sample_scene(0, "train", i) for i in range(300)]
    english = [world.sample_caption(scene, np.random.default_rng(i), language="en") for i, scene in enumerate(scenes)]
    assert all(caption.isascii() for caption in english)
    assert len(set(english)) > 250
    both = [world.sample_caption(scene, np.random.default_rng(i)) for i, scene in enumerate(scenes)]
    assert 0.25 < np.mean([not caption.isascii() for caption in both]) < 0.45  # Chinese keeps its share by default
    assert [c for c in both if c.isascii()] == [e for c, e in zip(both, english, strict=True) if c.isascii()]


def test_free_layout_keeps_each_object_in_its_named_region_and_mostly_clear_of_the_others() -> None:
    rng = np.random.default_rng(0)
    placements, overlaps = 0, 0
    for index in range(500):
        placed: list[tuple[float, float, float]] = []
        for obj in world.sample_scene(0, "train", index).objects:
            radius = rng.uniform(*world._FREE_RADIUS[obj.size])
            x, y = world._free_place(obj.position, radius, placed, rng)
            nearest = min(world.POSITIONS, key=lambda name: math.dist(world._SLOT_CENTRES[name], (x, y)))
            assert nearest == obj.position
            placements += 1
            overlaps += any(math.dist((x, y), (px, py)) <= radius + pr for px, py, pr in placed)
            placed.append((x, y, radius))
    assert overlaps / placements < 0.05  # only where 40 tries found no room (the slot's centre then)


def test_free_layout_moves_objects_but_keeps_the_look_deterministic() -> None:
    scene = world.sample_scene(0, "train", 3)
    free = np.asarray(world.render_randomised(scene, free_layout=True))
    assert np.array_equal(free, np.asarray(world.render_randomised(scene, free_layout=True)))
    assert not np.array_equal(free, np.asarray(world.render_randomised(scene)))


def test_framed_captions_never_use_the_held_out_renderers_query_phrasings() -> None:
    rng = np.random.default_rng(0)
    captions = {world.sample_caption(world.sample_scene(0, "train", i % 500), rng, framed=True) for i in range(20_000)}
    assert any(caption.startswith(world.FRAMES["en"]) for caption in captions)
    assert any(caption.startswith(world.FRAMES["zh"]) for caption in captions)
    held_out = {phrase(colour, shape) for ways in heldout.PHRASINGS.values() for phrase in ways
                for colour, shape in world.allowed_combos("all")}
    assert not captions & held_out
    assert not [caption for caption in captions if caption.startswith(("a picture with", "the ", "有一个"))]
