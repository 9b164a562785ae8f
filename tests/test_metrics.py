"""GET /metrics: Prometheus numbers that move with real traffic through a real uvicorn."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import STAGES
from clipspace import __version__
from tests.conftest import build, encoded, make_image, running_service, write_corpus

NAMES = [f"{n}.jpg" for n in range(6)] + [f"{n}.png" for n in range(6)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("metrics")
    write_corpus(root / "images", NAMES)
    build(root / "images", root / "index", tiny_encoder)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images = root / "images"
        yield service


def scrape(service) -> Samples:
    answer = service.client.get("/metrics")
    assert answer.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def search_text(service, text: str = "a red circle") -> None:
    assert service.client.post("/search/text", json={"text": text, "k": 3}).status_code == 200


def search_image(service, name: str = "3.jpg") -> None:
    answer = service.client.post("/search/image", files={"file": (name, (service.images / name).read_bytes(),
                                                                  "image/jpeg")})
    assert answer.status_code == 200


def test_metrics_answer_in_the_prometheus_text_format(served):
    answer = served.client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE clipspace_requests_total counter" in answer.text


def test_requests_are_counted_by_route_template_and_status(served):
    before = scrape(served)
    for _ in range(3):
        search_text(served)
    served.client.get("/images/424242")
    after = scrape(served)
    ok = {"route": "/search/text", "method": "POST", "status": "200"}
    missing = {"route": "/images/{item_id}", "method": "GET", "status": "404"}
    assert value(after, "clipspace_requests_total", **ok) - value(before, "clipspace_requests_total", **ok) == 3
    assert value(after, "clipspace_requests_total", **missing) - value(before, "clipspace_requests_total",
                                                                       **missing) == 1


def test_a_body_refused_before_routing_is_counted_under_its_route(served):
    before = scrape(served)
    assert served.client.post("/search/image", json={"file": "x"}).status_code == 415
    labels = {"route": "/search/image", "method": "POST", "status": "415"}
    assert value(scrape(served), "clipspace_requests_total", **labels) - value(
        before, "clipspace_requests_total", **labels) == 1


def test_unknown_paths_share_one_route_label(served):
    served.client.get("/no/such/page/1")
    served.client.get("/no/such/page/2")
    samples = scrape(served)
    assert value(samples, "clipspace_requests_total", route="<unmatched>", method="GET", status="404") >= 2
    assert not any("/no/such" in str(labels) for _, labels in samples)


def test_route_latency_histogram_counts_each_request(served):
    before = scrape(served)
    search_text(served)
    search_text(served)
    after = scrape(served)
    labels = {"route": "/search/text", "method": "POST"}
    count = "clipspace_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 2
    assert value(after, "clipspace_request_duration_seconds_sum", **labels) > value(
        before, "clipspace_request_duration_seconds_sum", **labels)


@pytest.mark.parametrize("stage", ["decode", "batch_wait", "embed", "search"])
def test_each_stage_of_an_image_query_is_timed(served, stage):
    before = scrape(served)
    search_image(served)
    after = scrape(served)
    count = "clipspace_stage_duration_seconds_count"
    assert value(after, count, stage=stage) - value(before, count, stage=stage) == 1
    assert value(after, "clipspace_stage_duration_seconds_sum", stage=stage) > value(
        before, "clipspace_stage_duration_seconds_sum", stage=stage)


def test_every_stage_is_exported_before_it_first_runs(served):
    samples = scrape(served)
    assert {stage for stage in STAGES if ("clipspace_stage_duration_seconds_count", (("stage", stage),))
            in samples} == set(STAGES)


def test_batch_sizes_add_up_to_the_queries_embedded(served):
    before = scrape(served)
    for text in ("one", "two", "three", "four"):
        search_text(served, text)
    search_image(served)
    after = scrape(served)
    total = "clipspace_batch_size_sum"
    assert value(after, total, queue="text") - value(before, total, queue="text") == 4
    assert value(after, total, queue="image") - value(before, total, queue="image") == 1


def test_queue_depth_is_zero_when_no_query_waits(served):
    search_text(served)
    samples = scrape(served)
    assert (value(samples, "clipspace_queue_depth", queue="text"),
            value(samples, "clipspace_queue_depth", queue="image")) == (0, 0)


def test_index_gauges_describe_the_version_being_served(served):
    info = served.client.get("/info").json()
    samples = scrape(served)
    assert value(samples, "clipspace_index_items") == info["count"]
    assert value(samples, "clipspace_index_version") == int(info["index_version"])
    assert value(samples, "clipspace_index_info", version=info["index_version"], model=info["model"]["model"]) == 1


def test_index_gauges_follow_a_newly_published_version(served, tiny_encoder, tmp_path):
    images = tmp_path / "images"
    index = served.images.parent / "index"
    write_corpus(images, [*NAMES, "extra.png"])
    build(images, index, tiny_encoder)
    served.wait_until(lambda: served.client.get("/info").json()["index_version"] == "0002")
    samples = scrape(served)
    assert (value(samples, "clipspace_index_items"), value(samples, "clipspace_index_version")) == (
        len(NAMES) + 1, 2)


def test_model_load_seconds_is_recorded(served):
    assert value(scrape(served), "clipspace_model_load_seconds") > 0


def test_build_info_names_the_clipspace_version(served):
    samples = scrape(served)
    info = next(dict(labels) for name, labels in samples if name == "clipspace_build_info")
    assert info["version"] == __version__ and {"torch", "open_clip", "faiss", "python"} <= info.keys()


def test_a_refused_upload_still_counts_its_decode_time(served):
    before = scrape(served)
    truncated = encoded(make_image(1, size=(400, 300)), "JPEG")[:2000]
    answer = served.client.post("/search/image", files={"file": ("a.jpg", truncated, "image/jpeg")})
    assert answer.status_code == 400
    count = "clipspace_stage_duration_seconds_count"
    assert value(scrape(served), count, stage="decode") - value(before, count, stage="decode") == 1
