"""Re-ranking end to end: a matcher trained for the served model re-scores the top candidates; any other is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from app.schemas import RerankedResult
from clipspace.align import world
from clipspace.align.export import architecture_config, export_local_dir
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.errors import ModelMismatch
from clipspace.fusion.beside import CONCAT_FILE, MATCHER_FILE
from clipspace.fusion.matcher import load_scorer
from clipspace.fusion.train import MatcherOptions, train_matchers
from clipspace.fusion.twins import colour_swap
from tests.conftest import TINY_ARCH, build, running_service
from tests.test_metrics import scrape, value

TINY_MATCHER = {"scenes": 24, "val_scenes": 8, "steps": 4, "mlp_steps": 4, "batch_size": 8, "width": 32,
                "heads": 2, "layers": 1, "warmup_steps": 2}


def export_tiny(folder, seed: int = 0) -> str:
    encoder = load_encoder(ModelSpec(TINY_ARCH, "none", "fp32", seed=seed))
    export_local_dir(encoder.model, architecture_config(TINY_ARCH), encoder.preprocess_cfg, folder)
    return f"local-dir:{folder}"


def write_scenes(folder, scenes: list[world.Scene]) -> None:
    folder.mkdir(parents=True)
    for index, scene in enumerate(scenes):
        world.render_scene(scene).save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(world.canonical_caption(scene), encoding="utf-8")


def scenes_with_twins(n: int, seed: int) -> list[world.Scene]:
    """Two-object scenes of two colours, each followed by its colour-swapped twin."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(400):
        scene = world.sample_scene(seed, "test", index)
        twin = colour_swap(scene, rng) if len(scene.objects) == 2 else None
        if twin is not None:
            scenes += [scene, twin]
        if len(scenes) == 2 * n:
            return scenes
    raise AssertionError("not enough two-object scenes")


def model_with_matcher(root) -> str:
    """A tiny local-dir model under root/model with a (barely) trained matcher beside it, and 12 world scenes
    (6 with their colour-swapped twins) with captions under root/images."""
    model = export_tiny(root / "model")
    train_matchers(MatcherOptions(model=model, **TINY_MATCHER), progress=False)
    write_scenes(root / "images", scenes_with_twins(6, 5))
    return model


@pytest.fixture(scope="module")
def tiny_with_matcher(tmp_path_factory):
    """`model_with_matcher`, serving its 12 scenes."""
    root = tmp_path_factory.mktemp("rerank")
    model = model_with_matcher(root)
    build(root / "images", root / "index", load_encoder(ModelSpec(model)))
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.root = root
        yield service


def search(service, *terms: dict, **options):
    return service.client.post("/search", json={"terms": list(terms), **options})


def test_training_writes_a_matcher_and_a_baseline_beside_the_model(tiny_with_matcher):
    folder = tiny_with_matcher.root / "model"
    assert (folder / MATCHER_FILE).stat().st_size < 10 * 1024 * 1024
    assert (folder / CONCAT_FILE).is_file()


def test_info_says_rerank_is_available_with_a_matcher_for_the_model(tiny_with_matcher):
    rerank = tiny_with_matcher.client.get("/info").json()["rerank"]
    assert rerank["available"] is True
    assert "cross-attention matcher" in rerank["detail"]


def test_reranked_results_keep_score_add_rerank_score_and_are_sorted_by_it(tiny_with_matcher):
    body = search(tiny_with_matcher, {"text": "a red circle on the left"}, rerank=True, k=5).json()
    assert body["query"] == {"modality": "composed", "target": "image", "rerank": True}
    results = body["results"]
    assert len(results) == 5
    assert all(set(r) == set(RerankedResult.model_fields) for r in results)
    assert [r["rerank_score"] for r in results] == sorted((r["rerank_score"] for r in results), reverse=True)


def test_a_reranked_query_is_timed_as_the_rerank_stage(tiny_with_matcher):
    count = "clipspace_stage_duration_seconds_count"
    before = scrape(tiny_with_matcher)
    assert search(tiny_with_matcher, {"text": "a red circle on the left"}, rerank=True, k=5).status_code == 200
    after = scrape(tiny_with_matcher)
    assert value(after, count, stage="rerank") - value(before, count, stage="rerank") == 1


def test_rerank_off_answers_dual_encoder_results_without_rerank_score(tiny_with_matcher):
    off = search(tiny_with_matcher, {"text": "a red circle on the left"}, k=5).json()["results"]
    plain = tiny_with_matcher.client.post("/search/text", json={"text": "a red circle on the left", "k": 5}).json()
    assert "rerank_score" not in off[0]
    assert [r["id"] for r in off] == [r["id"] for r in plain["results"]]


def test_reranked_candidates_are_the_dual_encoders_top_50_with_their_cosine_scores(tiny_with_matcher):
    on = search(tiny_with_matcher, {"text": "a blue square"}, rerank=True, k=12).json()["results"]
    off = search(tiny_with_matcher, {"text": "a blue square"}, k=12).json()["results"]
    assert {r["id"]: r["score"] for r in on} == pytest.approx({r["id"]: r["score"] for r in off}, abs=1e-5)


@pytest.mark.parametrize(("terms", "target", "detail"), [
    ([{"image_id": 0}], "image", "text term with a positive weight"),
    ([{"text": "a red circle", "weight": -1}, {"image_id": 0}], "image", "text term with a positive weight"),
    ([{"text": "a red circle"}], "text", "target 'image'"),
])
def test_rerank_refuses_a_query_it_cannot_read(tiny_with_matcher, terms, target, detail):
    answer = search(tiny_with_matcher, *terms, target=target, rerank=True)
    assert answer.status_code == 422
    assert detail in answer.json()["detail"]


def test_rerank_with_k_beyond_its_limit_is_refused(tiny_with_matcher):
    assert search(tiny_with_matcher, {"text": "a red circle"}, rerank=True, k=201).status_code == 422


def test_a_matcher_trained_for_another_model_is_refused_by_the_service(tiny_with_matcher, tmp_path):
    other = export_tiny(tmp_path / "other-model", seed=99)
    shutil.copy(tiny_with_matcher.root / "model" / MATCHER_FILE, tmp_path / "other-model" / MATCHER_FILE)
    write_scenes(tmp_path / "images", scenes_with_twins(2, 6))
    build(tmp_path / "images", tmp_path / "index", load_encoder(ModelSpec(other)))
    with running_service(index_dir=tmp_path / "index") as service:
        service.wait_ready()
        rerank = service.client.get("/info").json()["rerank"]
        assert rerank["available"] is False and "trained for the dual encoder" in rerank["detail"]
        refused = search(service, {"text": "a red circle"}, rerank=True)
        assert refused.status_code == 422 and "trained for the dual encoder" in refused.json()["detail"]
        assert search(service, {"text": "a red circle"}).status_code == 200


def test_loading_a_matcher_for_another_fingerprint_raises_model_mismatch(tiny_with_matcher):
    with pytest.raises(ModelMismatch, match="retrain it"):
        load_scorer(tiny_with_matcher.root / "model" / MATCHER_FILE, "blake2b:not-this-model")
