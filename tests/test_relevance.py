"""Calibrated relevance over HTTP (a real uvicorn, the embedded model, a small captioned world without stars):
relevance on every result, min_relevance and autocut cuts before paging, and versions without a calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipspace.align import world
from clipspace.errors import IndexCorrupt
from clipspace.index.calibration import expected_calibration_error, fit_calibration
from clipspace.index.manifest import Manifest
from clipspace.index.publish import open_current, publish_version
from clipspace.index.records import ItemRecord
from clipspace.index.relevance import autocut_length
from clipspace.index.writer import write_version
from tests.conftest import build, encoded, running_service

SCENES = 80


def write_starless_world(folder) -> None:
    """Captioned scenes (the image and its canonical caption), none of them with a star in it."""
    folder.mkdir(parents=True)
    kept = (scene for scene in world.generate_scenes(4 * SCENES, 3, "test")
            if all(obj.shape != "star" for obj in scene.objects))
    for index, scene in zip(range(SCENES), kept, strict=False):
        world.render_scene(scene, 128).save(folder / f"{index:05d}.png")
        (folder / f"{index:05d}.txt").write_text(world.canonical_caption(scene) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedded):
    root = tmp_path_factory.mktemp("relevance")
    write_starless_world(root / "images")
    build(root / "images", root / "index", embedded)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.index = root / "index"
        yield service


def calibration_of(index_dir):
    version = open_current(index_dir)
    version.close()
    return version.manifest.calibration


def search(service, text="a red circle", **body) -> dict:
    answer = service.client.post("/search/text", json={"text": text, "k": 50, "mode": "vector", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_result_carries_a_relevance_in_0_1_that_falls_with_the_cosine(served):
    results = search(served)["results"]
    assert len(results) == 50
    relevance = [result["relevance"] for result in results]
    assert all(0 <= value <= 1 for value in relevance)
    assert relevance == sorted(relevance, reverse=True)  # sorted by cosine, so by relevance too


def test_min_relevance_drops_results_below_it_and_zero_drops_none(served):
    relevance = [result["relevance"] for result in search(served)["results"]]
    middle = relevance[len(relevance) // 2]
    kept = search(served, min_relevance=middle)["results"]
    assert [result["relevance"] for result in kept] == [value for value in relevance if value >= middle]
    assert len(search(served, min_relevance=0)["results"]) == 50


def test_autocut_cuts_at_the_first_drop_larger_than_the_calibrated_one(served):
    relevance = [result["relevance"] for result in search(served, "two shapes")["results"]]
    drop = calibration_of(served.index).maps["text-image"].autocut_drop
    expected = autocut_length(relevance, drop)
    assert len(search(served, "two shapes", autocut=True)["results"]) == expected < 50


def test_a_star_in_a_world_without_stars_matches_nothing_at_min_relevance_one_half(served):
    answer = search(served, "a star", min_relevance=0.5)
    assert answer["results"] == [] and answer["next_cursor"] is None


def test_pages_walk_the_cut_list_and_the_last_gives_no_cursor(served):
    relevance = [result["relevance"] for result in search(served)["results"]]
    cut = relevance[7]  # a cut that 8 or more of the 50 pass
    passing = [result["id"] for result in search(served, min_relevance=cut)["results"]]
    walked, cursor = [], None
    while True:
        page = search(served, min_relevance=cut, k=3, **({"cursor": cursor} if cursor else {}))
        walked += [result["id"] for result in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == passing


@pytest.mark.parametrize("value", [-0.1, 1.5, "x"])
def test_a_min_relevance_outside_0_1_is_a_422_on_every_route(served, value):
    assert served.client.post("/search/text", json={"text": "a circle", "min_relevance": value}).status_code == 422
    assert served.client.post("/search", json={"terms": [{"text": "a circle"}],
                                               "min_relevance": value}).status_code == 422
    upload = {"file": ("a.png", encoded(world.render_scene(world.sample_scene(0, "test", 0)), "PNG"), "image/png")}
    assert served.client.post("/search/image", params={"min_relevance": value}, files=upload).status_code == 422


def test_an_image_search_takes_min_relevance_and_autocut_as_query_parameters(served):
    picture = encoded(world.render_scene(world.sample_scene(0, "test", 0)), "PNG")
    answer = served.client.post("/search/image", params={"k": 50, "min_relevance": 0.999999, "autocut": "true"},
                                files={"file": ("a.png", picture, "image/png")})
    assert answer.status_code == 200, answer.text
    assert all(result["relevance"] >= 0.999999 for result in answer.json()["results"])


def test_a_version_without_a_calibration_serves_with_relevance_null_and_no_cut(tmp_path, tiny_encoder):
    vectors = np.random.default_rng(0).normal(size=(6, tiny_encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [ItemRecord(index, f"{index}.png", f"{index:064x}", 10, 0, 4, 4, None) for index in range(6)]
    staging = write_version(tmp_path / "index", items, vectors, vectors[:0], model=tiny_encoder.identity,
                            factory="Flat", corpus_root=tmp_path, report={})
    publish_version(tmp_path / "index", staging)
    with running_service(index_dir=tmp_path / "index") as service:
        service.wait_ready()
        results = search(service, k=6, min_relevance=0.9, autocut=True)["results"]
    assert len(results) == 6 and {result["relevance"] for result in results} == {None}


def test_a_rebuild_with_another_model_fits_a_calibration_for_that_model(tmp_path, embedded, tiny_encoder):
    write_starless_world(tmp_path / "images")
    build(tmp_path / "images", tmp_path / "index", embedded)
    build(tmp_path / "images", tmp_path / "index", tiny_encoder)
    assert calibration_of(tmp_path / "index").fingerprint == tiny_encoder.identity.fingerprint


def test_without_captions_relevance_is_monotone_in_the_cosine_and_bounded(tiny_encoder):
    images = np.random.default_rng(1).normal(size=(300, tiny_encoder.dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    calibration = fit_calibration(images, images[:0], [], tiny_encoder.embed_texts, "random")
    for mapping in calibration.maps.values():
        relevance = mapping.relevance(np.linspace(-1, 1, 401))
        assert mapping.method == "null-tail"
        assert np.all(np.diff(relevance) >= 0) and np.all((relevance >= 0) & (relevance <= 1))


def test_a_hybrid_word_match_is_kept_by_min_relevance_and_carries_its_pictures_relevance(served):
    answer = served.client.post("/search/text", json={"text": "00007", "k": 5, "mode": "hybrid", "min_relevance": 1})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["path"] == "00007.png" and result["channel"] == "keyword" and 0 <= result["relevance"] < 1


def test_a_composed_query_carries_relevance_and_takes_the_same_cut(served):
    body = {"terms": [{"text": "a red circle"}, {"text": "blue", "weight": -0.5}], "k": 50}
    uncut = served.client.post("/search", json=body).json()["results"]
    middle = uncut[10]["relevance"]
    cut = served.client.post("/search", json={**body, "min_relevance": middle}).json()["results"]
    assert [result["id"] for result in cut] == [result["id"] for result in uncut if result["relevance"] >= middle]


def test_a_manifest_whose_calibration_names_another_model_is_refused(served):
    version = open_current(served.index)
    version.close()
    raw = json.loads(version.manifest.to_json())
    raw["calibration"]["fingerprint"] = "another model"
    with pytest.raises(IndexCorrupt, match="fitted for another model"):
        Manifest.from_json(json.dumps(raw), "test")


def test_info_says_how_the_version_is_calibrated(served):
    relevance = served.client.get("/info").json()["relevance"]
    assert relevance["text-image"]["method"] == "platt" and relevance["image-image"]["method"] == "null-tail"


def test_pairs_a_cosine_cannot_tell_apart_are_calibrated_at_even_odds_only_at_one_half():
    """Why the benchmark gives the concept pairs' error at their own share of matches too (lab notes)."""
    labels = np.array([1.0] * 19 + [0.0])
    assert expected_calibration_error(np.full(20, 0.5), labels) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(20, 0.95), labels) == pytest.approx(0.45)
    assert expected_calibration_error(np.full(20, 0.95), labels, even_odds=False) == pytest.approx(0.0)
