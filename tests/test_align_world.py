"""The synthetic world: deterministic by seed, a compositional split that training never sees, fitting captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
from PIL import Image

from clipspace.align import world
from clipspace.align.__main__ import main
from clipspace.align.datasets import read_pairs

RECIPES = Path(__file__).resolve().parent.parent / "clipspace/align/recipes"
# The architecture file the shipped model's recipe names.
SHIPPED_RECIPE_ARCH = RECIPES / json.loads((RECIPES / "clipspace-shapes-v1.json").read_text())["model"]


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
