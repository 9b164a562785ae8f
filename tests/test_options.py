"""Options by flat name: shipped recipes load into the values they always had; flags are typed from the dataclass."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from clipspace.align.train import TrainOptions
from clipspace.fusion.train import MatcherOptions
from clipspace.options import add_flags, from_flat, given_flags, read_recipe, to_flat

ROOT = Path(__file__).resolve().parent.parent
TRAIN_RECIPES = sorted((ROOT / "clipspace/align/recipes").glob("clipspace-shapes-*.json"))
MATCHER_RECIPES = sorted((ROOT / "clipspace/fusion/recipes").glob("matcher-*.json"))
# TrainOptions' defaults when its 12 world options were flat fields (before they were nested as `world`)
FLAT_TRAIN_DEFAULTS = {
    "pretrained": None, "data": "world", "val_data": None, "out": "runs/align", "export": None,
    "export_storage": "fp32", "resume": None, "epochs": 10, "batch_size": 256, "lr": 0.001, "weight_decay": 0.1,
    "warmup_steps": 100, "grad_clip": 1.0, "max_logit_scale": 4.605170185988092, "lock_image": False,
    "lock_text": False, "pretrained_text": False, "seed": 0, "device": "auto", "workers": 0, "threads": None,
    "world_scenes": 20000, "world_val_scenes": 1000, "world_seed": 0, "world_val_seed": 1, "world_render_size": 128,
    "world_randomised_share": 0.0, "world_randomise_from_epoch": 0, "world_shift": 0, "world_free_layout": False,
    "world_shape_twins": False, "world_caption_language": None, "world_caption_frames": False,
    "channels_last": False, "image_bf16": False, "world_wordnet_share": 0.0,
    "text_unlocked_layers": 0, "text_lr_scale": 1.0,
}


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda path: path.stem)
def test_every_shipped_training_recipe_loads_into_the_options_it_always_gave(recipe: Path) -> None:
    flat = json.loads(recipe.read_text(encoding="utf-8"))
    options = from_flat(TrainOptions, read_recipe(recipe, TrainOptions))
    if flat["model"].endswith(".json"):
        assert options.model == str(recipe.parent / flat["model"])  # the architecture file beside the recipe
    else:  # a model to fine-tune (local-dir:), named from the repository root
        assert options.model == flat["model"]
    assert to_flat(options) == {**FLAT_TRAIN_DEFAULTS, **flat, "model": options.model}
    assert (options.world.scenes, options.world.seed, options.world.val_seed) == (
        flat["world_scenes"], flat["world_seed"], flat["world_val_seed"])


@pytest.mark.parametrize("recipe", MATCHER_RECIPES, ids=lambda path: path.stem)
def test_every_shipped_matcher_recipe_loads_into_its_values(recipe: Path) -> None:
    flat = json.loads(recipe.read_text(encoding="utf-8"))
    options = from_flat(MatcherOptions, read_recipe(recipe, MatcherOptions))
    assert {name: value for name, value in to_flat(options).items() if name in flat} == flat


@pytest.mark.parametrize("options_type", [TrainOptions, MatcherOptions])
def test_a_recipe_with_an_unknown_option_is_refused_by_name(options_type: type, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "x", "world_scenez": 3}))
    with pytest.raises(ValueError, match=r"recipe.json: unknown options \['world_scenez'\]"):
        read_recipe(recipe, options_type)


def test_a_checkpoints_flat_options_give_back_the_same_nested_options() -> None:
    options = from_flat(TrainOptions, {"model": "m", "lr": 0.5, "world_shift": 4, "world_caption_language": "en"})
    assert options.world.shift == 4 and options.world.caption_language == "en" and options.lr == 0.5
    assert from_flat(TrainOptions, to_flat(options)) == options


def test_flags_are_typed_from_the_annotations_and_only_given_ones_override() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, TrainOptions)
    args = parser.parse_args(["--world-scenes", "64", "--lr", "0.01", "--threads", "2", "--world-caption-language",
                              "en", "--no-world-shape-twins", "--world-randomised-share", "0.5"])
    assert given_flags(args, TrainOptions) == {"world_scenes": 64, "lr": 0.01, "threads": 2,
                                               "world_caption_language": "en", "world_shape_twins": False,
                                               "world_randomised_share": 0.5}
    assert {name: type(value) for name, value in given_flags(args, TrainOptions).items()} == {
        "world_scenes": int, "lr": float, "threads": int, "world_caption_language": str, "world_shape_twins": bool,
        "world_randomised_share": float}
