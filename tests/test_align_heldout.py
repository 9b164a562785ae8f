"""The held-out renderer: independent of training, deterministic, its shapes where it says they are."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipspace.align import heldout, world
from clipspace.align.datasets import read_pairs
from clipspace.cli import main


def test_training_never_imports_the_heldout_renderer() -> None:
    code = ("import sys, clipspace.align.train, clipspace.align.datasets;"
            "print('clipspace.align.heldout' in sys.modules)")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "False"


def test_the_same_seed_gives_the_same_pictures_and_pixels() -> None:
    for index in range(10):
        first, second = heldout.sample_picture(3, index), heldout.sample_picture(3, index)
        assert first == second
        assert np.array_equal(np.asarray(heldout.render_picture(first)), np.asarray(heldout.render_picture(second)))


@pytest.mark.parametrize("shape", world.SHAPES)
def test_every_shape_is_inside_at_its_centre_and_outside_beyond_its_radius(shape: str) -> None:
    angles = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    far = heldout.signed_distance(shape, 1.3 * np.cos(angles), 1.3 * np.sin(angles), 1.0)
    centre = heldout.signed_distance(shape, np.zeros(1), np.zeros(1), 1.0)
    assert centre[0] < -0.2
    assert far.min() > 0


@pytest.mark.parametrize("shape", world.SHAPES)
def test_every_shape_covers_a_plausible_share_of_its_circle(shape: str) -> None:
    # a star or cross covers least, a circle all of it; an empty or inverted field would be far outside this
    grid = np.linspace(-1.2, 1.2, 241)
    inside = heldout.signed_distance(shape, grid[None, :], grid[:, None], 1.0) < 0
    share = inside.sum() * (grid[1] - grid[0]) ** 2 / math.pi
    assert 0.25 < share < 1.05


def test_objects_never_overlap_and_stay_on_the_canvas() -> None:
    for index in range(300):
        objects = heldout.sample_picture(9, index).objects
        assert 1 <= len(objects) <= 3
        for i, obj in enumerate(objects):
            assert obj.radius < obj.x < 1 - obj.radius and obj.radius < obj.y < 1 - obj.radius
            for other in objects[i + 1:]:
                assert math.dist((obj.x, obj.y), (other.x, other.y)) > obj.radius + other.radius


def test_each_object_is_drawn_in_its_own_colour_where_it_stands() -> None:
    picture = heldout.sample_picture(4, 0)
    sharp = heldout.Picture(picture.objects, "flat", "flat", 128, 0.0, picture.seed)
    pixels = np.asarray(heldout.render_picture(sharp), dtype=float)
    for obj in sharp.objects:
        centre = pixels[int(obj.y * 128), int(obj.x * 128)]
        assert np.abs(centre - np.array(obj.rgb)).max() < 25, (obj, centre)


def test_heldout_phrasings_are_not_the_worlds_attribute_queries() -> None:
    for language, ways in heldout.PHRASINGS.items():
        for phrase in ways:
            assert phrase("red", "circle") != world.attribute_query("red", "circle", language)


def test_heldout_command_writes_pictures_and_a_manifest_the_eval_reads(tmp_path: Path) -> None:
    assert main(["heldout", "--out", str(tmp_path), "--n", "5", "--seed", "2"]) == 0
    pairs = read_pairs(tmp_path)
    assert [pair.path.name for pair in pairs] == [f"{i:05d}.png" for i in range(5)]
    for index, pair in enumerate(pairs):
        picture = heldout.sample_picture(2, index)
        assert pair.objects == tuple(obj.as_scene_object() for obj in picture.objects)
    records = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert {record["renderer"] for record in records} == {"heldout"}
