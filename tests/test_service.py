"""End to end: a real uvicorn serving a real index built by the builder, queried over HTTP."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.schemas import SearchResult
from clipspace.align.export import architecture_config, export_local_dir
from clipspace.encoder import ModelSpec, load_encoder
from tests.conftest import TINY_ARCH, build, encoded, make_image, running_service, write_corpus

NAMES = [f"photo {n:02d}.jpg" for n in range(12)] + [f"png/{n}.png" for n in range(12)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    """One service for the read-only tests: 24 images, two with captions."""
    root = tmp_path_factory.mktemp("served")
    images = root / "images"
    write_corpus(images, NAMES)
    (images / "photo 03.txt").write_text("a sunset over the sea", encoding="utf-8")
    (images / "png" / "5.txt").write_text("一只猫", encoding="utf-8")
    build(images, root / "index", tiny_encoder)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images = images
        yield service


def upload(service, data: bytes, *, k: int = 5, name: str = "q.jpg", content_type: str = "image/jpeg", **params):
    return service.client.post("/search/image", params={"k": k, **params},
                               files={"file": (name, data, content_type)})


def test_image_query_returns_that_same_image_first_with_score_one(served):
    answer = upload(served, (served.images / "photo 07.jpg").read_bytes())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == {"modality": "image", "target": "image"}
    assert body["results"][0]["path"] == "photo 07.jpg"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    png = upload(served, (served.images / "png" / "9.png").read_bytes(), name="x.png", content_type="image/png")
    assert png.json()["results"][0]["path"] == "png/9.png"


def test_text_query_answers_the_contract_sorted_and_at_most_k(served):
    for k in (1, 7, 1000):
        body = served.client.post("/search/text", json={"text": "a red circle", "k": k}).json()
        scores = [hit["score"] for hit in body["results"]]
        assert len(scores) == min(k, len(NAMES)) and scores == sorted(scores, reverse=True)
    hit = body["results"][0]
    assert set(hit) == set(SearchResult.model_fields) and hit["url"] == f"/images/{hit['id']}"
    assert body["model"] == TINY_ARCH and body["index_version"] == "0001" and body["took_ms"] >= 0


def test_text_target_searches_captions(served):
    body = served.client.post("/search/text", json={"text": "一只猫", "target": "text"}).json()
    assert next((hit["path"], hit["caption"]) for hit in body["results"]) == ("png/5.png", "一只猫")
    assert len(body["results"]) == 2


def test_a_text_query_answers_alike_through_the_shortcut_and_through_fastapi(served):
    """`application/json` is answered by app.shortcut; a `+json` type FastAPI also accepts goes to the route."""
    def ask(content_type: str, text: str = "a red circle") -> httpx.Response:
        return served.client.post("/search/text", content=json.dumps({"text": text, "k": 4, "target": "image"}),
                                  headers={"content-type": content_type})

    quick, framework = ask("application/json"), ask("application/vnd.clipspace+json")
    assert quick.status_code == framework.status_code == 200
    assert quick.headers["content-type"] == framework.headers["content-type"]
    assert {**quick.json(), "took_ms": 0} == {**framework.json(), "took_ms": 0}
    assert len(quick.json()["results"]) == 4
    blank_quick, blank_framework = ask("application/json", " "), ask("application/vnd.clipspace+json", " ")
    assert blank_quick.status_code == blank_framework.status_code == 422
    assert blank_quick.json() == blank_framework.json()


def test_images_endpoint_serves_indexed_files_only(served):
    hit = served.client.post("/search/text", json={"text": "x", "k": 1}).json()["results"][0]
    answer = served.client.get(hit["url"])
    assert answer.status_code == 200 and answer.content == (served.images / hit["path"]).read_bytes()
    assert served.client.get("/images/99999").status_code == 404
    for probe in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/-1", "/images/photo%2001.jpg"):
        answer = served.client.get(probe)
        assert answer.status_code in (404, 422) and "root:" not in answer.text


def test_info_health_and_readiness(served):
    info = served.client.get("/info").json()
    assert (info["count"], info["caption_count"], info["dim"], info["index_type"]) == (24, 2, 32, "IndexFlatIP")
    assert served.client.get("/healthz").json()["status"] == "alive"
    assert served.client.get("/readyz").json()["status"] == "ready"
    assert served.client.get("/openapi.json").json()["paths"].keys() >= {"/search/text", "/search/image"}
    assert "clipspace" in served.client.get("/").text


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed: nothing to keep out")
def test_a_cpu_service_never_loads_triton(served):
    served.wait_ready()  # the model is loaded and has answered: every import has happened
    assert served.client.post("/search/text", json={"text": "a red circle"}).status_code == 200
    assert "libtriton" not in Path(f"/proc/{served.pid}/maps").read_text()


def truncated_jpeg() -> bytes:
    return encoded(make_image(5, size=(400, 300)), "JPEG")[:2000]


def png_bomb() -> bytes:
    return encoded(Image.new("1", (12_000, 12_000)), "PNG")


BAD_REQUESTS = {
    "empty text": (lambda c: c.post("/search/text", json={"text": ""}), 422),
    "blank text": (lambda c: c.post("/search/text", json={"text": "   \n"}), 422),
    "overlong text": (lambda c: c.post("/search/text", json={"text": "a" * 1001}), 422),
    "k=0": (lambda c: c.post("/search/text", json={"text": "cat", "k": 0}), 422),
    "k=100000": (lambda c: c.post("/search/text", json={"text": "cat", "k": 100000}), 422),
    "unknown target": (lambda c: c.post("/search/text", json={"text": "cat", "target": "audio"}), 422),
    "not json": (lambda c: c.post("/search/text", content=b"{oops", headers={"content-type": "application/json"}),
                 422),
    "image k=0": (lambda c: c.post("/search/image?k=0", files={"file": ("a.png", b"x", "image/png")}), 422),
    "non-image upload": (lambda c: c.post("/search/image", files={"file": ("a.png", b"hello", "image/png")}), 415),
    "declared as text": (lambda c: c.post("/search/image", files={"file": ("a.txt", b"hello", "text/plain")}), 415),
    "empty upload": (lambda c: c.post("/search/image", files={"file": ("a.jpg", b"", "image/jpeg")}), 400),
    "truncated jpeg": (lambda c: c.post("/search/image", files={"file": ("a.jpg", truncated_jpeg(), "image/jpeg")}),
                       400),
    "png bomb": (lambda c: c.post("/search/image", files={"file": ("b.png", png_bomb(), "image/png")}), 413),
    "oversized upload": (lambda c: c.post("/search/image", files={"file": ("big.jpg", b"\xff" * (21 << 20))}), 413),
    "json to upload route": (lambda c: c.post("/search/image", json={"file": "x"}), 415),
    "huge json body": (lambda c: c.post("/search/text", content=b'{"text": "' + b"a" * (1 << 20) + b'"}',
                                        headers={"content-type": "application/json"}), 413),
    "huge item id": (lambda c: c.get(f"/images/{10**20}"), 422),
    "no file field": (lambda c: c.post("/search/image", files={"other": ("a.png", b"x", "image/png")}), 422),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_its_4xx_and_the_service_keeps_serving(served, case):
    send, status = BAD_REQUESTS[case]
    try:
        answer = send(served.client)
    except httpx.TransportError:  # the server may close the connection on an oversized body it refused
        pytest.fail(f"{case}: connection failed instead of an HTTP {status}")
    assert answer.status_code == status, answer.text
    assert "detail" in answer.json()
    good = upload(served, (served.images / "photo 01.jpg").read_bytes())
    assert good.status_code == 200 and good.json()["results"][0]["path"] == "photo 01.jpg"


def test_concurrent_queries_each_get_their_own_answer(served):
    names = NAMES[::2]
    answers: dict[str, str] = {}

    def query(name: str) -> None:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            answer = client.post("/search/image", params={"k": 1},
                                 files={"file": (name, (served.images / name).read_bytes(), "image/jpeg")})
            answers[name] = answer.json()["results"][0]["path"]

    threads = [threading.Thread(target=query, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {name: name for name in names}


def test_service_waits_for_an_index_then_follows_new_versions_without_failing_requests(tmp_path, tiny_encoder):
    images, index = tmp_path / "images", tmp_path / "index"
    write_corpus(images, ["one.png", "two.png"])
    with running_service(index_dir=index) as service:
        not_ready = service.client.get("/readyz")
        assert not_ready.status_code == 503 and "index_builder" in not_ready.json()["detail"]
        assert service.client.post("/search/text", json={"text": "x"}).status_code == 503
        build(images, index, tiny_encoder)
        service.wait_ready()
        assert service.client.get("/info").json()["count"] == 2

        failures: list[str] = []
        stop = threading.Event()

        def keep_querying() -> None:
            with httpx.Client(base_url=service.url, timeout=60) as client:
                while not stop.is_set():
                    answer = client.post("/search/text", json={"text": "anything", "k": 50})
                    if answer.status_code != 200:
                        failures.append(answer.text)

        gone = next(hit for hit in service.client.post("/search/text", json={"text": "x"}).json()["results"]
                    if hit["path"] == "one.png")
        hammer = threading.Thread(target=keep_querying)
        hammer.start()
        try:
            write_corpus(images, ["three.jpg", "four.jpg"], first_seed=50)
            (images / "one.png").unlink()
            missing = service.client.get(gone["url"])  # still indexed, no longer on disk
            assert missing.status_code == 404 and "no longer" in missing.json()["detail"]
            build(images, index, tiny_encoder)
            service.wait_until(lambda: service.client.get("/info").json()["index_version"] == "0002")
        finally:
            stop.set()
            hammer.join()
        assert failures == []
        paths = {hit["path"] for hit in service.client.post("/search/text", json={"text": "x", "k": 10}).json()[
            "results"]}
        assert paths == {"two.png", "three.jpg", "four.jpg"}
        assert service.client.get(gone["url"]).status_code == 404


def test_a_model_that_is_not_the_index_model_is_refused(tmp_path, tiny_encoder):
    images, index, model_dir = tmp_path / "images", tmp_path / "index", tmp_path / "model"
    write_corpus(images, ["one.png"])
    export_local_dir(tiny_encoder.model, architecture_config(TINY_ARCH), tiny_encoder.preprocess_cfg, model_dir)
    build(images, index, load_encoder(ModelSpec(f"local-dir:{model_dir}")))
    retrained = load_encoder(ModelSpec(TINY_ARCH, "none", "fp32", seed=99))
    export_local_dir(retrained.model, architecture_config(TINY_ARCH), retrained.preprocess_cfg, model_dir)
    with running_service(index_dir=index) as service:
        service.wait_until(lambda: "starting" not in service.client.get("/readyz").json()["detail"])
        ready = service.client.get("/readyz")
        assert ready.status_code == 503 and "different model" in ready.json()["detail"]
        search = service.client.post("/search/text", json={"text": "x"})
        assert search.status_code == 503 and "Rebuild the index" in search.json()["detail"]
        assert service.client.get("/healthz").status_code == 200


def test_a_bf16_index_is_served_in_bf16_and_a_refused_new_version_leaves_it_serving(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_corpus(images, ["one.jpg", "two.png", "three.jpg"])
    build(images, index, load_encoder(ModelSpec(TINY_ARCH, "none", "bf16")))
    with running_service(index_dir=index) as service:
        service.wait_ready()
        assert service.client.get("/info").json()["model"]["precision"] == "bf16"
        best = upload(service, (images / "one.jpg").read_bytes()).json()["results"][0]
        assert best["path"] == "one.jpg" and best["score"] == pytest.approx(1.0, abs=1e-3)

        newer = tmp_path / "newer"
        build(images, newer, load_encoder(ModelSpec(TINY_ARCH, "none", "bf16", seed=5)))
        (index / "versions" / "0002").mkdir()  # publish a version whose files cannot be trusted
        for part in (newer / "versions" / "0001").iterdir():
            (index / "versions" / "0002" / part.name).write_bytes(part.read_bytes()[:-1])
        (index / "current").write_text("0002\n")
        service.wait_until(lambda: "0002" in service.client.get("/readyz").json()["detail"])
        ready = service.client.get("/readyz").json()
        assert ready["status"] == "ready" and "still serving version 0001" in ready["detail"]
        assert service.client.get("/info").json()["index_version"] == "0001"
        assert upload(service, (images / "two.png").read_bytes()).json()["results"][0]["path"] == "two.png"


def test_a_panorama_is_indexed_and_found_by_itself(tmp_path, tiny_encoder):
    images, index = tmp_path / "images", tmp_path / "index"
    write_corpus(images, ["one.jpg", "two.png"])
    make_image(77, size=(8000, 100)).save(images / "panorama.png")  # 80:1
    assert build(images, index, tiny_encoder).added == 3
    with running_service(index_dir=index) as service:
        service.wait_ready()
        best = upload(service, (images / "panorama.png").read_bytes(), name="p.png", content_type="image/png")
        assert best.status_code == 200, best.text
        assert best.json()["results"][0]["path"] == "panorama.png"
        assert best.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.fixture(scope="module")
def served_compressed(tmp_path_factory, tiny_encoder):
    """A service on an index built with an explicit compressed factory string (as `--index-type` gives it)."""
    root = tmp_path_factory.mktemp("served-compressed")
    write_corpus(root / "images", NAMES)
    build(root / "images", root / "index", tiny_encoder, index_type="IVF4,PQ8x4fs")
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images = root / "images"
        yield service


def test_info_reports_the_index_type_and_its_search_parameters(served_compressed):
    info = served_compressed.client.get("/info").json()
    assert (info["faiss_factory"], info["index_type"]) == ("IVF4,PQ8x4fs", "IndexIVFPQFastScan")
    assert info["search_params"] == {"nprobe": 1, "k_factor": 20}


def test_a_compressed_index_answers_an_indexed_image_with_itself_at_its_exact_score(served_compressed):
    answer = upload(served_compressed, (served_compressed.images / "photo 07.jpg").read_bytes())
    assert answer.json()["results"][0]["path"] == "photo 07.jpg"
    assert answer.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
