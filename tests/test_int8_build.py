"""`python -m index_builder --precision int8`: an index embedded on ONNX Runtime's int8 towers, served by them."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from app.runtime import open_encoder
from clipspace.identity import ModelSpec
from clipspace.index.publish import open_current
from clipspace.onnx_int8 import int8_folder
from clipspace.onnx_towers import RUNTIMES_DIR
from clipspace.settings import EMBEDDED_MODEL, Settings
from index_builder import int8
from index_builder.cli import EXIT_OK, EXIT_USAGE, main
from tests.conftest import run_cli, running_service, write_corpus
from tests.test_onnx_service import QUERIES, answers, torch_in

# Measured on this corpus (docs/lab-notes.md, "int8 builds"): the embedded model's int8 image vectors have a cosine
# of at least 0.99997 to its fp32 ones, the int8 index's top 10 equal the fp32 index's for every query, and a score
# moves by 0.0034 at most. 0.8 leaves room for near-ties on another CPU's kernels (test_onnx_int8.py saw one on a
# 30-picture corpus: 0.9), 0.01 three times the largest move; a broken copy strays far past both.
MIN_TOP10_OVERLAP, SCORE_TOLERANCE = 0.8, 0.01


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """24 pictures built by the CLI in fp32 and in int8; the int8 build reuses the fp32 build's ONNX export (one
    export per model: what a second index of the same model would find), so it only quantises."""
    root = tmp_path_factory.mktemp("int8-build")
    write_corpus(root / "images", [f"{number:02d}.png" for number in range(24)])
    fp32 = run_cli("--images", str(root / "images"), "--index", str(root / "fp32"), "--precision", "fp32", "--quiet")
    assert fp32.wait(timeout=600) == EXIT_OK, fp32.stdout.read()
    shutil.copytree(root / "fp32" / RUNTIMES_DIR, root / "int8" / RUNTIMES_DIR)
    built = run_cli("--images", str(root / "images"), "--index", str(root / "int8"), "--precision", "int8")
    assert built.wait(timeout=600) == EXIT_OK, built.stdout.read()
    return root


def manifest(index) -> dict:
    return json.loads((index / "versions" / (index / "current").read_text().strip() / "manifest.json").read_text())


def test_an_int8_build_records_int8_and_keeps_its_towers_beside_the_index(indexes):
    model = manifest(indexes / "int8")["model"]
    assert model["precision"] == "int8" and manifest(indexes / "fp32")["model"]["precision"] == "fp32"
    assert int8_folder(indexes / "int8", model["fingerprint"]).is_dir()
    assert manifest(indexes / "int8")["build_report"]["added"] == 24


def test_the_service_answers_an_int8_index_on_its_int8_towers_as_an_fp32_index_without_torch(indexes):
    with running_service(index_dir=indexes / "int8") as on_int8, \
            running_service(index_dir=indexes / "fp32", runtime="onnx") as on_fp32:
        on_int8.wait_ready()
        on_fp32.wait_ready()
        runtime = on_int8.client.get("/info").json()["runtime"]
        assert runtime["name"] == "onnx-int8" and runtime["detail"].startswith("int8 index: its own int8 towers")
        for query in QUERIES:
            ours, theirs = answers(on_int8, query), answers(on_fp32, query)
            assert ours[0][0] == theirs[0][0], query
            overlap = len({item for item, _ in ours} & {item for item, _ in theirs}) / len(theirs)
            assert overlap >= MIN_TOP10_OVERLAP, (query, ours, theirs)
            scores = dict(theirs)
            assert all(abs(score - scores[item]) < SCORE_TOLERANCE for item, score in ours if item in scores)
        assert not torch_in(on_int8.pid)


def test_an_int8_index_is_never_answered_by_fp32_queries_whatever_the_runtime_asked(indexes):
    wanted = open_current(indexes / "int8")
    try:
        identity = wanted.model
    finally:
        wanted.close()
    spec = ModelSpec(EMBEDDED_MODEL, precision="int8")
    encoder, runtime = open_encoder(spec, identity, Settings(index_dir=indexes / "int8", runtime="torch"))
    assert encoder.identity == identity and runtime.name == "onnx-int8"
    assert "CLIPSPACE_RUNTIME=torch does not apply to an int8 index" in runtime.detail


def test_reindexing_an_int8_index_reuses_its_vectors_and_another_precision_embeds_again(indexes, tmp_path, capsys):
    index = tmp_path / "index"
    shutil.copytree(indexes / "int8", index, symlinks=True)
    args = ["--images", str(indexes / "images"), "--index", str(index), "--quiet"]
    assert main([*args, "--precision", "int8"]) == EXIT_OK
    assert "0 added, 0 updated, 24 reused" in capsys.readouterr().out
    assert main([*args, "--precision", "fp32", "--no-onnx-export"]) == EXIT_OK
    assert "24 updated, 0 reused" in capsys.readouterr().out
    assert manifest(index)["model"]["precision"] == "fp32"
    assert "model changed (precision" in manifest(index)["build_report"]["full_reembed_reason"]


def test_int8_without_the_onnx_extra_is_a_usage_error_before_any_model_loads(indexes, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(int8, "ONNX_MODULES", (*int8.ONNX_MODULES, "clipspace_not_installed"))
    with caplog.at_level(logging.ERROR):
        code = main(["--images", str(indexes / "images"), "--index", str(tmp_path / "index"), "--precision", "int8"])
    assert code == EXIT_USAGE
    assert "--precision int8 runs on ONNX Runtime, and clipspace_not_installed is not installed: pip install " \
           "'clipspace[onnx]'" in caplog.text
    assert not (tmp_path / "index").exists()


def test_int8_on_ray_is_a_usage_error(indexes, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(["--images", str(indexes / "images"), "--index", str(tmp_path / "index"), "--precision", "int8",
                     "--ray"])
    assert code == EXIT_USAGE and "a Ray build runs torch" in caplog.text


def test_int8_vectors_stay_close_to_fp32_ones(indexes):
    vectors = []
    for name in ("fp32", "int8"):
        version = open_current(indexes / name)
        try:
            rows = {record.path: row for record, row, _ in version.items()}
            vectors.append(np.stack([version.image_vectors()[rows[path]] for path in sorted(rows)]))
        finally:
            version.close()
    cosines = np.sum(vectors[0] * vectors[1], axis=1)
    assert cosines.min() >= 0.999, cosines
