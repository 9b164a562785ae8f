"""A matcher for any model from a captioned folder (`matcher --corpus`): trained, found beside the index, re-ranking
on a real uvicorn."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clipspace.cli import main
from clipspace.fusion.beside import MATCHER_FILE, index_matcher_folder
from clipspace.fusion.matcher import read_config
from clipspace.fusion.rerank import find_reranker
from tests.conftest import ROOT, TINY_ARCH, build, running_service
from tests.test_fusion_rerank import scenes_with_twins, write_scenes


def train_from_folder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipspace.align", "matcher", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def folder_trained(tmp_path_factory, tiny_encoder):
    """Twelve captioned world scenes indexed with the tiny random model, then its matcher trained from them."""
    root = tmp_path_factory.mktemp("folder-matcher")
    write_scenes(root / "images", scenes_with_twins(6, 5))
    build(root / "images", root / "index", tiny_encoder)
    trained = train_from_folder("--corpus", str(root / "images"), "--model", TINY_ARCH, "--pretrained", "none",
                                "--index", str(root / "index"), "--steps", "3", "--batch-size", "4")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root, json.loads(trained.stdout), tiny_encoder.fingerprint


def test_training_from_a_captioned_folder_writes_a_matcher_beside_the_index_for_the_models_weights(folder_trained):
    root, report, fingerprint = folder_trained
    path = index_matcher_folder(root / "index", fingerprint) / MATCHER_FILE
    assert report["matcher"] == str(path)
    assert read_config(path).encoder_fingerprint == fingerprint


def test_training_reports_the_negatives_it_rewrote_and_how_held_out_images_score_them(folder_trained):
    _, report, _ = folder_trained
    assert report["pairs"] == 12
    assert report["negatives"]["attribute_swap"] == 12  # every scene has two objects of two colours
    assert 0 <= report["val_negative_accuracy"]["all"] <= 1


def test_the_service_reranks_an_index_with_a_folder_trained_matcher(folder_trained):
    root, _, fingerprint = folder_trained
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        rerank = service.client.get("/info").json()["rerank"]
        assert rerank["available"] is True and str(index_matcher_folder(root / "index", fingerprint)) in \
            rerank["detail"]
        body = service.client.post("/search", json={"terms": [{"text": "a red circle and a blue square"}],
                                                    "rerank": True, "k": 5}).json()
        assert body["query"]["rerank"] is True
        scores = [r["rerank_score"] for r in body["results"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)


def test_without_a_matcher_the_reason_says_how_to_train_one_from_captions(tmp_path, tiny_encoder):
    reranker, detail = find_reranker(tiny_encoder, tmp_path / "index")
    assert reranker is None and "matcher --corpus DIR" in detail
    assert str(index_matcher_folder(tmp_path / "index", tiny_encoder.fingerprint) / MATCHER_FILE) in detail


def test_corpus_training_refuses_world_only_options_with_a_clear_error(tmp_path, capsys):
    assert main(["matcher", "--corpus", str(tmp_path), "--model", TINY_ARCH, "--scenes", "10"]) == 2
    assert "apply to the world's matcher only" in capsys.readouterr().err
