"""End to end: composed queries (POST /search) and zero-shot labels (POST /classify) on a real uvicorn."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from app.schemas import SearchResult
from clipspace.fusion.query import combine
from clipspace.index.publish import open_current
from tests.conftest import build, encoded, make_image, running_service, write_corpus

NAMES = [f"{n:02d}.png" for n in range(10)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    """Ten images, one with a caption, served by the tiny random model (which has no matcher)."""
    root = tmp_path_factory.mktemp("fusion")
    images = root / "images"
    write_corpus(images, NAMES)
    (images / "03.txt").write_text("a sunset over the sea", encoding="utf-8")
    build(images, root / "index", tiny_encoder)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images = images
        version = open_current(root / "index")
        service.ids = {item.path: item.id for item, _, _ in version.items()}
        service.vectors = {item.id: np.array(version.image_vectors()[row]) for item, row, _ in version.items()}
        version.close()
        yield service


def search(service, *terms: dict, **options) -> httpx.Response:
    return service.client.post("/search", json={"terms": list(terms), **options})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_one_text_term_answers_exactly_what_a_vector_search_text_answers(served):
    composed = search(served, {"text": "a red circle"}, k=5).json()
    plain = served.client.post("/search/text", json={"text": "a red circle", "k": 5, "mode": "vector"}).json()
    assert [(r["id"], r["score"]) for r in composed["results"]] == [(r["id"], r["score"]) for r in plain["results"]]


def test_answer_is_a_search_response_of_modality_composed(served):
    body = search(served, {"text": "a red circle"}, k=3).json()
    assert body["query"] == {"modality": "composed", "target": "image", "rerank": False}
    assert set(body) == {"query", "model", "index_version", "took_ms", "results", "next_cursor"}
    assert set(body["results"][0]) == set(SearchResult.model_fields)
    assert len(body["results"]) == 3


def test_more_like_this_returns_the_image_itself_first_with_score_one(served):
    image_id = served.ids["07.png"]
    best = search(served, {"image_id": image_id}).json()["results"][0]
    assert (best["id"], best["path"]) == (image_id, "07.png")
    assert best["score"] == pytest.approx(1.0, abs=1e-4)


def test_weighted_terms_score_every_result_by_the_normalised_weighted_sum(served, tiny_encoder):
    image_id = served.ids["02.png"]
    text = tiny_encoder.embed_texts(["a blue square"])[0]
    query = combine([served.vectors[image_id], text, served.vectors[served.ids["05.png"]]], [1.0, 0.7, -0.4])
    body = search(served, {"image_id": image_id}, {"text": "a blue square", "weight": 0.7},
                  {"image_id": served.ids["05.png"], "weight": -0.4}, k=10).json()
    for result in body["results"]:
        assert result["score"] == pytest.approx(float(served.vectors[result["id"]] @ query), abs=1e-4)
    assert [r["score"] for r in body["results"]] == sorted((r["score"] for r in body["results"]), reverse=True)


def test_an_uploaded_image_term_finds_that_image_first(served):
    upload = b64((served.images / "04.png").read_bytes())
    best = search(served, {"image": upload}).json()["results"][0]
    assert best["path"] == "04.png" and best["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_vector_term_is_searched_as_given(served):
    vector = served.vectors[served.ids["06.png"]].tolist()
    best = search(served, {"vector": vector}).json()["results"][0]
    assert best["path"] == "06.png"


def test_target_text_searches_caption_vectors(served):
    body = search(served, {"text": "a sunset over the sea"}, target="text").json()
    assert [r["path"] for r in body["results"]] == ["03.png"]
    assert body["query"]["target"] == "text"


BAD_QUERIES = {
    "unknown image id": ({"terms": [{"image_id": 99999}]}, 404),
    "vector of the wrong dimension": ({"terms": [{"vector": [0.1, 0.2, 0.3]}]}, 422),
    "zero vector": ({"terms": [{"vector": [0.0] * 32}]}, 422),
    "all weights zero": ({"terms": [{"text": "a", "weight": 0}, {"text": "b", "weight": 0}]}, 422),
    "terms that cancel out": ({"terms": [{"text": "a cat"}, {"text": "a cat", "weight": -1}]}, 422),
    "too many terms": ({"terms": [{"text": f"term {n}"} for n in range(17)]}, 422),
    "no terms": ({"terms": []}, 422),
    "a term with no source": ({"terms": [{"weight": 1.0}]}, 422),
    "a term with two sources": ({"terms": [{"text": "a cat", "image_id": 1}]}, 422),
    "an unknown term field": ({"terms": [{"txt": "a cat"}]}, 422),
    "blank text": ({"terms": [{"text": "  "}]}, 422),
    "k out of range": ({"terms": [{"text": "a cat"}], "k": 0}, 422),
    "unknown target": ({"terms": [{"text": "a cat"}], "target": "audio"}, 422),
    "rerank without a matcher": ({"terms": [{"text": "a cat"}], "rerank": True}, 422),
    "bad base64": ({"terms": [{"image": "%%% not base64 %%%"}]}, 400),
    "base64 of something not an image": ({"terms": [{"image": b64(b"hello world")}]}, 415),
    "base64 of a truncated jpeg": ({"terms": [{"image": b64(encoded(make_image(3, (300, 200)), "JPEG")[:900])}]},
                                   400),
}


@pytest.mark.parametrize("case", BAD_QUERIES)
def test_bad_composed_query_gets_its_status_with_a_detail_and_the_service_keeps_serving(served, case):
    body, status = BAD_QUERIES[case]
    answer = served.client.post("/search", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]
    assert search(served, {"image_id": served.ids["01.png"]}).json()["results"][0]["path"] == "01.png"


def test_a_query_that_is_not_json_is_refused_with_415(served):
    answer = served.client.post("/search", content=b"terms=x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and "application/json" in answer.json()["detail"]


def test_a_body_beyond_one_base64_upload_is_refused_with_413(served):
    image = "A" * (28 << 20)  # 21 MiB once decoded: past the 20 MiB upload limit
    answer = served.client.post("/search", json={"terms": [{"image": image}]})
    assert answer.status_code == 413


def test_rerank_unavailable_is_explained_by_info(served):
    rerank = served.client.get("/info").json()["rerank"]
    assert rerank["available"] is False
    assert "no matcher for this model" in rerank["detail"] and "python -m clipspace.align matcher" in rerank["detail"]
    refused = search(served, {"text": "a cat"}, rerank=True).json()["detail"]
    assert "not available" in refused and "--corpus DIR" in refused  # it says how to train one


def classify(service, **body) -> httpx.Response:
    return service.client.post("/classify", json=body)


def test_classify_ranks_every_label_with_probabilities_that_sum_to_one(served):
    labels = ["a cat", "a dog", "a red circle", "一只猫"]
    body = classify(served, image_id=served.ids["02.png"], labels=labels).json()
    probabilities = [entry["probability"] for entry in body["labels"]]
    assert sorted(entry["label"] for entry in body["labels"]) == sorted(labels)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_classify_is_a_softmax_at_the_models_logit_scale(served, tiny_encoder):
    labels = ["a cat", "a dog", "a red circle"]
    image = served.vectors[served.ids["02.png"]]
    logits = tiny_encoder.model.logit_scale.exp().item() * (tiny_encoder.embed_texts(labels) @ image)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    body = classify(served, image_id=served.ids["02.png"], labels=labels, template="{}").json()
    answered = {entry["label"]: entry["probability"] for entry in body["labels"]}
    assert answered == pytest.approx(dict(zip(labels, expected.tolist(), strict=True)), abs=1e-4)


def test_classify_an_upload_answers_as_for_the_indexed_image(served):
    labels = ["a cat", "a dog", "a red circle"]
    by_id = classify(served, image_id=served.ids["08.png"], labels=labels).json()["labels"]
    upload = b64((served.images / "08.png").read_bytes())
    by_upload = classify(served, image=upload, labels=labels).json()["labels"]
    assert [e["label"] for e in by_upload] == [e["label"] for e in by_id]
    assert [e["probability"] for e in by_upload] == pytest.approx([e["probability"] for e in by_id], abs=1e-4)


BAD_CLASSIFY = {
    "no image": ({"labels": ["a cat"]}, 422),
    "two images": ({"image_id": 1, "image": b64(b"x"), "labels": ["a cat"]}, 422),
    "no labels": ({"image_id": 1, "labels": []}, 422),
    "duplicate labels": ({"image_id": 1, "labels": ["a cat", "a cat"]}, 422),
    "empty label": ({"image_id": 1, "labels": [""]}, 422),
    "template without a placeholder": ({"image_id": 1, "labels": ["a cat"], "template": "a photo"}, 422),
    "unknown image id": ({"image_id": 99999, "labels": ["a cat"]}, 404),
    "bad base64": ({"image": "%%%", "labels": ["a cat"]}, 400),
    "not an image": ({"image": b64(b"hello world"), "labels": ["a cat"]}, 415),
}


@pytest.mark.parametrize("case", BAD_CLASSIFY)
def test_bad_classify_request_gets_its_status_with_a_detail(served, case):
    body, status = BAD_CLASSIFY[case]
    answer = served.client.post("/classify", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]


def test_openapi_documents_search_and_classify(served):
    paths = served.client.get("/openapi.json").json()["paths"]
    assert {"/search", "/classify"} <= paths.keys()
