"""Faults under a running service (a real uvicorn): a failing model, index files deleted or damaged under it.

Whatever breaks, the service answers 200 from what it has loaded or 503 with a detail; never 500, never a crash.
"""

from __future__ import annotations

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
    }


def statuses(answers: dict[str, httpx.Response]) -> dict[str, int]:
    return {route: answer.status_code for route, answer in answers.items()}


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
            size = part.stat().st_size
            with open(part, "r+b") as damaged:  # in place: the service's open files see the garbage
                damaged.write(b"\x5a" * size)
        answers = statuses(every_answer(service))
        assert set(answers.values()) <= {200, 503}, answers
        assert answers["text"] == 200  # a small version's records are held in memory: searches still answer
        assert answers["file"] == 503  # an image's file is looked up in meta.sqlite, which can no longer be read
        detail = service.client.get("/images/0").json()["detail"]
        assert "meta.sqlite" in detail and "index_builder" in detail
        assert service.process.poll() is None

        build(images, index, tiny_encoder)
        service.wait_until(lambda: service.client.get("/info").json().get("index_version") == "0002")
        answers = statuses(every_answer(service))
        assert answers == dict.fromkeys(answers, 200)


def test_a_meta_sqlite_damaged_under_the_service_is_a_503_on_every_route_that_reads_it(index_and_images):
    index, _ = index_and_images
    readers = {"more like this", "classify", "file", "thumb"}  # the rest answer from what the version loaded
    with running_service(index_dir=index) as service:
        service.wait_ready()
        meta = index / "versions" / "0001" / "meta.sqlite"
        with open(meta, "r+b") as damaged:  # in place: the service's open connection reads the garbage
            damaged.write(b"\x5a" * meta.stat().st_size)
        answers = every_answer(service)
        assert statuses(answers) == {route: 503 if route in readers else 200 for route in answers}
        assert all("meta.sqlite" in answers[route].json()["detail"] for route in readers)
