"""Faults under a running service (a real uvicorn): a failing model, index files deleted or damaged under it or
before it loads them.

Whatever breaks, the service answers 200 from what it has loaded or 503 with a detail; never 500, never a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import build, encoded, make_image, running_service, write_corpus

NAMES = ["one.jpg", "two.png", "three.jpg", "four.png"]


@pytest.fixture
def index_and_images(tmp_path, tiny_encoder):
    images, index = tmp_path / "images", tmp_path / "index"
    write_corpus(images, NAMES)
    (images / "one.txt").write_text("a caption", encoding="utf-8")
    build(images, index, tiny_encoder)
    return index, images


def every_answer(service) -> dict[str, httpx.Response]:
    """One request of every kind the service serves, by name."""
    client = service.client
    upload = {"file": ("q.jpg", encoded(make_image(9), "JPEG"), "image/jpeg")}
    return {
        "text": client.post("/search/text", json={"text": "a red circle"}),
        "captions": client.post("/search/text", json={"text": "a caption", "target": "text"}),
        "image": client.post("/search/image", files=upload),
        "more like this": client.post("/search", json={"terms": [{"image_id": 0}]}),
        "classify": client.post("/classify", json={"image_id": 0, "labels": ["circle", "square"]}),
        "file": client.get("/images/0"),
        "thumb": client.get("/thumbs/0"),
        "info": client.get("/info"),
        "ready": client.get("/readyz"),
        "duplicates": client.get("/duplicates"),
    }


def statuses(answers: dict[str, httpx.Response]) -> dict[str, int]:
    return {route: answer.status_code for route, answer in answers.items()}


def overwritten_with_garbage(part: Path) -> Path:
    with open(part, "r+b") as damaged:  # in place: a running service's open files see the garbage
        damaged.write(b"\x5a" * part.stat().st_size)
    return part


def garbage_meta_sqlite(version: Path) -> str:
    return overwritten_with_garbage(version / "meta.sqlite").name


def missing_vector_shard(version: Path) -> str:
    shard = next(version.glob("image-*.f32"))
    shard.unlink()
    return shard.name


def truncated_faiss_file(version: Path) -> str:
    index = version / "image.faiss"
    os.truncate(index, index.stat().st_size // 2)
    return index.name


def test_a_model_failure_in_the_batch_thread_is_a_503_with_a_detail_and_the_next_request_is_served(
        index_and_images, tmp_path):
    index, _ = index_and_images
    fault = tmp_path / "fail-next-forward"
    with running_service(app="tests.faulty_app:app", index_dir=index, test_fault_file=fault) as service:
        service.wait_ready()
        fault.touch()
        failed = service.client.post("/search/text", json={"text": "a red circle"})
        assert failed.status_code == 503
        assert "injected fault" in failed.json()["detail"]
        assert not fault.exists()  # the fault fired inside the model, on that request
        served = service.client.post("/search/text", json={"text": "a red circle"})
        assert served.status_code == 200 and served.json()["results"]


def test_an_image_query_whose_model_pass_fails_is_a_503_and_the_next_one_is_served(index_and_images, tmp_path):
    index, images = index_and_images
    fault = tmp_path / "fail-next-forward"
    with running_service(app="tests.faulty_app:app", index_dir=index, test_fault_file=fault) as service:
        service.wait_ready()
        query = {"file": ("q.png", (images / "two.png").read_bytes(), "image/png")}
        fault.touch()
        assert service.client.post("/search/image", files=query).status_code == 503
        served = service.client.post("/search/image", files=query)
        assert served.status_code == 200 and served.json()["results"][0]["path"] == "two.png"


def test_deleting_the_serving_versions_files_leaves_the_service_answering_from_what_it_loaded(index_and_images):
    index, _ = index_and_images
    with running_service(index_dir=index) as service:
        service.wait_ready()
        for part in (index / "versions" / "0001").iterdir():
            part.unlink()
        (index / "versions" / "0001").rmdir()
        answers = statuses(every_answer(service))
        assert answers == dict.fromkeys(answers, 200)
        assert service.process.poll() is None


def test_corrupting_the_serving_versions_files_answers_503_never_500_until_a_new_version_is_published(
        index_and_images, tiny_encoder):
    index, images = index_and_images
    with running_service(index_dir=index) as service:
        service.wait_ready()
        for part in (index / "versions" / "0001").iterdir():
            overwritten_with_garbage(part)
        answers = statuses(every_answer(service))
        assert set(answers.values()) <= {200, 503}, answers
        assert service.process.poll() is None

        build(images, index, tiny_encoder)
        service.wait_until(lambda: service.client.get("/info").json().get("index_version") == "0002")
        answers = statuses(every_answer(service))
        assert answers == dict.fromkeys(answers, 200)


def test_a_meta_sqlite_damaged_under_the_service_is_a_503_on_every_route_that_reads_it(index_and_images):
    index, _ = index_and_images
    # text queries are hybrid by default: their keyword channel reads meta.sqlite; the rest answer from memory
    readers = {"text", "captions", "more like this", "classify", "file", "thumb", "duplicates"}
    with running_service(index_dir=index) as service:
        service.wait_ready()
        damaged = garbage_meta_sqlite(index / "versions" / "0001")
        answers = every_answer(service)
        assert statuses(answers) == {route: 503 if route in readers else 200 for route in answers}
        assert all(f"{damaged} cannot be read" in answers[route].json()["detail"] for route in readers)
        assert all("index_builder" in answers[route].json()["detail"] for route in readers)


# Damaged under a running service, a mapped shard or FAISS file could take the process down (SIGBUS), and what a
# version reads from them is loaded or mapped when it opens: their faults are met when a version is loaded.
@pytest.mark.parametrize("damage", [garbage_meta_sqlite, missing_vector_shard, truncated_faiss_file],
                         ids=["damaged meta.sqlite", "missing vector shard", "truncated faiss file"])
def test_a_version_damaged_before_it_loads_is_a_503_naming_the_damaged_file_on_every_route(index_and_images, damage):
    index, _ = index_and_images
    damaged = damage(index / "versions" / "0001")
    with running_service(index_dir=index) as service:
        service.wait_until(lambda: "not loaded" in service.client.get("/readyz").json()["detail"])
        answers = every_answer(service)
        assert statuses(answers) == dict.fromkeys(answers, 503)
        assert all(damaged in answer.json()["detail"] for answer in answers.values())
