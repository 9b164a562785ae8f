"""The service on ONNX Runtime against a real uvicorn: the same answers as torch, no torch in the process, fallbacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from clipspace.encoder import ModelSpec, load_encoder
from clipspace.onnx_export import export_towers
from clipspace.onnx_towers import RUNTIMES_DIR, TEXT_FILE
from clipspace.settings import EMBEDDED_MODEL
from tests.conftest import build, encoded, make_image, running_service, write_corpus

QUERIES = ["a red circle", "two blue squares", "a green triangle on a yellow background", "a photo", "猫"]
# Both runtimes compute in fp32 from the same weights: the vectors differ by float rounding (|Δ| < 1e-5 per
# component, tests/test_onnx_runtime.py), so a cosine score may move in its sixth decimal, never more.
SCORE_TOLERANCE = 1e-5


def torch_in(pid: int) -> bool:
    """Whether the process mapped torch's library: true once anything in it imported torch."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def onnx_index(tmp_path_factory):
    """30 pictures indexed in fp32 by the embedded model (which ships a matcher), with the towers' export."""
    root = tmp_path_factory.mktemp("onnx-service")
    write_corpus(root / "images", [f"{number:02d}.png" for number in range(30)])
    encoder = load_encoder(ModelSpec(EMBEDDED_MODEL, precision="fp32"))
    build(root / "images", root / "index", encoder)
    export_towers(encoder, root / "index")
    return root


@pytest.fixture(scope="module")
def on_onnx(onnx_index):
    with running_service(index_dir=onnx_index / "index", runtime="onnx") as service:
        service.wait_ready()
        yield service


@pytest.fixture(scope="module")
def on_torch(onnx_index):
    with running_service(index_dir=onnx_index / "index", runtime="torch") as service:
        service.wait_ready()
        yield service


def answers(service, query: str) -> list[tuple[int, float]]:
    body = service.client.post("/search/text", json={"text": query, "k": 10, "mode": "vector"}).json()
    return [(result["id"], result["score"]) for result in body["results"]]


def test_info_names_the_runtime_in_use_and_why(on_onnx, on_torch):
    onnx_runtime, torch_runtime = (service.client.get("/info").json()["runtime"] for service in (on_onnx, on_torch))
    assert onnx_runtime["name"] == "onnx" and "verified against torch" in onnx_runtime["detail"]
    assert torch_runtime == {"name": "torch", "detail": "CLIPSPACE_RUNTIME=torch"}


@pytest.mark.parametrize("query", QUERIES)
def test_search_on_onnx_runtime_answers_as_on_torch(on_onnx, on_torch, query):
    ours, theirs = answers(on_onnx, query), answers(on_torch, query)
    assert [item for item, _ in ours] == [item for item, _ in theirs]
    assert np.allclose([score for _, score in ours], [score for _, score in theirs], atol=SCORE_TOLERANCE)


def test_an_uploaded_image_on_onnx_runtime_answers_as_on_torch(on_onnx, on_torch, onnx_index):
    data = encoded(make_image(7, size=(200, 150)), "JPEG")
    ours, theirs = ([(result["id"], result["score"]) for result in service.client.post(
        "/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "10"}).json()["results"]]
        for service in (on_onnx, on_torch))
    assert [item for item, _ in ours] == [item for item, _ in theirs]
    assert np.allclose([score for _, score in ours], [score for _, score in theirs], atol=SCORE_TOLERANCE)


def test_the_service_on_onnx_runtime_never_imports_torch_until_a_rerank(on_onnx, on_torch):
    """Text and image queries, thumbnails and zero-shot labels run without torch; the matcher loads it on demand."""
    picture = encoded(make_image(3), "PNG")
    assert on_onnx.client.post("/search/image", files={"file": ("q.png", picture, "image/png")}).status_code == 200
    assert on_onnx.client.get("/thumbs/1").status_code == 200
    assert on_onnx.client.post("/classify", json={"labels": ["a circle", "a square"], "image_id": 1}).status_code == 200
    answers(on_onnx, "a red circle")
    assert not torch_in(on_onnx.pid)
    assert torch_in(on_torch.pid)  # the check itself sees torch where it is
    rerank = {"terms": [{"text": "a red circle"}], "k": 10, "rerank": True}
    ours, theirs = (service.client.post("/search", json=rerank) for service in (on_onnx, on_torch))
    assert ours.status_code == 200, ours.text
    assert [result["id"] for result in ours.json()["results"]] == [result["id"] for result in theirs.json()["results"]]
    assert torch_in(on_onnx.pid)


def test_without_an_export_auto_serves_on_torch_and_onnx_makes_the_export(onnx_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(onnx_index / "index", index, ignore=shutil.ignore_patterns(RUNTIMES_DIR))
    with running_service(index_dir=index) as service:
        service.wait_ready()
        runtime = service.client.get("/info").json()["runtime"]
        assert runtime["name"] == "torch" and "no ONNX export" in runtime["detail"]
        assert answers(service, QUERIES[0])
    with running_service(index_dir=index, runtime="onnx") as service:
        service.wait_ready()  # the export is made first
        assert service.client.get("/info").json()["runtime"]["name"] == "onnx"
        assert "next start serves without torch" in service.log.read_text()
    assert len(list((index / RUNTIMES_DIR).iterdir())) == 1


def test_an_export_whose_weights_were_altered_falls_back_to_torch_and_says_why(onnx_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(onnx_index / "index", index)
    folder = next((index / RUNTIMES_DIR).iterdir())
    model = onnx.load(str(folder / TEXT_FILE))
    weights = max(model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights)[::-1].copy(), weights.name))
    onnx.save(model, str(folder / TEXT_FILE))
    with running_service(index_dir=index, runtime="onnx") as service:
        service.wait_ready()
        runtime = service.client.get("/info").json()["runtime"]
        assert runtime["name"] == "torch" and "differs from the torch towers" in runtime["detail"]
        assert "differs from the torch towers" in service.log.read_text()
        assert answers(service, QUERIES[0])

