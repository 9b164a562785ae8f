"""Keys at the door: API keys, what stays open, the rate limit, CORS, against a real uvicorn."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.keys import KeyFileInvalid, add_key, line_for, load_keys
from app.ratelimit import TokenBuckets
from clipspace.settings import RateLimit
from tests.conftest import build, running_service, write_corpus
from tests.launcher import launched
from tests.test_service import BAD_REQUESTS, NAMES

OPEN_PAGES = ("/", "/openapi.json", "/docs", "/redoc")
PROBES = ("/healthz", "/readyz", "/metrics")


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("keys")
    write_corpus(root / "images", NAMES)
    build(root / "images", root / "index", tiny_encoder)
    return root


def keyed_client(service, key: str, scheme: str = "Bearer") -> httpx.Client:
    return httpx.Client(base_url=service.url, timeout=30, headers={"authorization": f"{scheme} {key}"})


@pytest.fixture(scope="module")
def keyed(index):
    """A service with two keys, no rate limit: `keyed.client` sends none, `keyed.with_key` the first."""
    keys_file = index / "keys.txt"
    first, second = add_key(keys_file, "first"), add_key(keys_file, "second")
    with running_service(index_dir=index / "index", api_keys_file=keys_file) as service:
        service.keys = (first, second)
        service.with_key = keyed_client(service, first)
        service.wait_until(lambda: service.with_key.get("/readyz").status_code == 200, timeout=120)
        yield service
        service.with_key.close()


@pytest.fixture(scope="module")
def guarded(index):
    """Probes protected, 1 request a second with bursts of 20 per key, CORS for two origins. Its /healthz needs a
    key, so it is started by the launcher and waited for with one."""
    keys_file = index / "guarded-keys.txt"
    limited, other = add_key(keys_file), add_key(keys_file)
    env = {"CLIPSPACE_INDEX_DIR": str(index / "index"), "CLIPSPACE_API_KEYS_FILE": str(keys_file),
           "CLIPSPACE_PROTECT_METRICS": "1", "CLIPSPACE_RATE_LIMIT": "1/s,burst=20",
           "CLIPSPACE_CORS_ORIGINS": "https://photos.example, https://b.example"}
    with launched(env, index / "guarded.log") as service:
        service.client = httpx.Client(base_url=service.url, timeout=30)
        service.limited, service.other = keyed_client(service, limited), keyed_client(service, other)
        deadline = time.monotonic() + 180
        while not ready(service.other):
            assert service.process.poll() is None and time.monotonic() < deadline, service.log_tail()
            time.sleep(1.0)  # the refill rate: waiting costs the key no part of its burst
        yield service
        for client in (service.client, service.limited, service.other):
            client.close()


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def assert_needs_a_key(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.headers["content-type"] == "application/json" and answer.json()["detail"]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_with_a_key_gets_its_own_4xx_and_without_one_a_401(keyed, case):
    send, status = BAD_REQUESTS[case]
    try:
        with_key, without = send(keyed.with_key), send(keyed.client)
    except httpx.TransportError:  # the server may close the connection on a body it refused
        pytest.fail(f"{case}: connection failed instead of an HTTP answer")
    assert with_key.status_code == status, with_key.text
    assert_needs_a_key(without)
    assert keyed.with_key.post("/search/text", json={"text": "a red circle"}).status_code == 200


def test_every_route_but_the_page_the_schema_and_the_probes_needs_a_key(keyed):
    paths = keyed.client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        concrete = path.replace("{item_id}", "1")
        for method in operations:
            answer = keyed.client.request(method, concrete)
            if path in PROBES:
                assert answer.status_code != 401, path
            else:
                assert_needs_a_key(answer)
    for path in (*OPEN_PAGES, *PROBES):
        assert keyed.client.get(path).status_code == 200, path
    assert_needs_a_key(keyed.client.get("/no/such/page"))


def test_images_and_thumbnails_are_behind_the_key(keyed):
    hit = keyed.with_key.post("/search/text", json={"text": "a red circle", "k": 1}).json()["results"][0]
    for url in (hit["url"], f"/thumbs/{hit['id']}"):
        assert_needs_a_key(keyed.client.get(url))
        answer = keyed.with_key.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/")


@pytest.mark.parametrize("header, accepted", [
    ("Bearer {key}", True),
    ("bearer {key}", True),  # the scheme is case-insensitive (RFC 9110)
    ("Bearer   {key}", True),
    ("Bearer {key}x", False),
    ("Bearer x{key}", False),
    ("Bearer {key} {key}", False),
    ("Bearer", False),
    ("", False),
    ("Basic {key}", False),
    ("{key}", False),
    ("Bearer sha256:{digest}", False),  # the stored line is no key
])
def test_only_the_key_itself_as_a_bearer_token_opens_the_door(keyed, header, accepted):
    key = keyed.keys[1]
    value = header.format(key=key, digest=line_for(key).removeprefix("sha256:"))
    answer = keyed.client.post("/search/text", json={"text": "a red circle"}, headers={"authorization": value})
    if accepted:
        assert answer.status_code == 200, answer.text
    else:
        assert_needs_a_key(answer)
        assert key not in answer.text


@pytest.mark.parametrize("header, status", [
    ("Bearer {key} ", 200), ("Bearer {key}\t", 200), ("Bearer {key}  \t ", 200), ("Bearer ", 401), ("Bearer \t", 401)])
def test_white_space_around_the_value_is_no_part_of_the_key(keyed, header, status):
    """HTTP drops the white space around a header value (RFC 9110 5.5) before the service sees it: the key arrives
    whole, and an empty bearer stays empty. (httpx refuses to send such headers: these go over a plain socket.)"""
    host, port = keyed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"GET /info HTTP/1.1\r\nHost: {host}\r\nAuthorization: {header.format(key=keyed.keys[0])}"
                           "\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]


def test_a_refused_key_is_told_apart_from_a_missing_one(keyed):
    missing = keyed.client.get("/info")
    wrong = keyed.client.get("/info", headers={"authorization": "Bearer not-a-key"})
    assert missing.headers["www-authenticate"] == 'Bearer realm="clipspace"'
    assert wrong.headers["www-authenticate"] == 'Bearer realm="clipspace", error="invalid_token"'
    assert "not accepted" in wrong.json()["detail"] and "Authorization: Bearer" in missing.json()["detail"]


def test_refusals_are_counted_and_no_key_reaches_the_log_or_the_metrics(keyed):
    before = keyed.client.get("/metrics").text
    keyed.client.get("/info", headers={"authorization": f"Bearer {keyed.keys[0]}-wrong"})
    after = keyed.client.get("/metrics").text
    assert counted(after, "/info", "401") == counted(before, "/info", "401") + 1
    for key in keyed.keys:
        assert key not in after and key not in keyed.log_tail(10**6)


def counted(exposition: str, route: str, status: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(exposition) for sample in family.samples
               if sample.name == "clipspace_requests_total"
               and (sample.labels["route"], sample.labels["status"]) == (route, status))


def test_the_schema_documents_the_key_and_the_401(keyed):
    schema = keyed.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "description": "a key from CLIPSPACE_API_KEYS_FILE"}
    text = schema["paths"]["/search/text"]["post"]
    assert text["security"] == [{"ApiKey": []}] and "401" in text["responses"] and "429" not in text["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_probes_need_the_key_when_metrics_are_protected(guarded):
    for path in PROBES:
        assert_needs_a_key(guarded.client.get(path))
        assert guarded.other.get(path).status_code == 200
    assert guarded.client.get("/").status_code == guarded.client.get("/openapi.json").status_code == 200


def test_a_key_past_its_rate_gets_429_with_retry_after_and_other_keys_go_on(guarded):
    answers, started = [], time.monotonic()
    while len(answers) < 200 and not any(answer.status_code == 429 for answer in answers[-1:]):
        answers.append(guarded.limited.post("/search/text", json={"text": "a red circle"}))
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused and all(answer.status_code in (200, 429) for answer in answers)
    admitted = sum(answer.status_code == 200 for answer in answers)
    assert 20 <= admitted <= 20 + (time.monotonic() - started) * 1 + 1  # the burst, and what 1/s refilled since
    retry = int(refused[0].headers["retry-after"])
    assert retry >= 1 and "try again" in refused[0].json()["detail"]
    assert guarded.other.post("/search/text", json={"text": "a red circle"}).status_code == 200
    assert "429" in guarded.other.get("/openapi.json").json()["paths"]["/search/text"]["post"]["responses"]
    time.sleep(retry)
    assert guarded.limited.get("/info").status_code == 200


def test_cors_answers_a_preflight_without_a_key_for_an_allowed_origin_only(guarded):
    def preflight(origin: str) -> httpx.Response:
        return guarded.client.options("/search/text", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})

    allowed, denied = preflight("https://photos.example"), preflight("https://evil.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    answer = guarded.other.get("/info", headers={"origin": "https://b.example"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://b.example"
    refused = guarded.client.get("/info", headers={"origin": "https://b.example"})  # a browser may read the 401
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://b.example"


def test_cors_is_off_by_default(keyed):
    answer = keyed.with_key.get("/info", headers={"origin": "https://photos.example"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_a_key_file_of_plain_keys_or_of_nothing_is_refused(tmp_path):
    (tmp_path / "plain.txt").write_text("# ours\nmy-secret-key\n")
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    with pytest.raises(KeyFileInvalid, match=r"plain.txt:2 .*hashes, never keys"):
        load_keys(tmp_path / "plain.txt")
    with pytest.raises(KeyFileInvalid, match="holds no key"):
        load_keys(tmp_path / "empty.txt")
    with pytest.raises(KeyFileInvalid, match="cannot be read"):
        load_keys(tmp_path / "missing.txt")
    (tmp_path / "ok.txt").write_text(f"# team\n\n{line_for('k1', 'alice')}  \n{line_for('k2')}\n")
    assert [key.name for key in load_keys(tmp_path / "ok.txt")] == ["alice", "line 4"]


def test_a_token_bucket_refills_at_its_rate_and_says_how_long_to_wait():
    now = [0.0]
    buckets = TokenBuckets(RateLimit.parse("2/s,burst=3"), clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 0.5]
    assert buckets.take("b") == 0  # each client has its own bucket
    now[0] = 0.25  # half a token back
    assert buckets.take("a") == 0.25
    now[0] = 0.5
    assert (buckets.take("a"), buckets.take("a")) == (0, 0.5)
    slow = TokenBuckets(RateLimit.parse("6/min"), clock=lambda: now[0])
    assert (slow.take("a"), slow.take("a")) == (0, 10)
    now[0] = 100.0
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 0.5]  # full again, never past the burst


def test_anonymous_buckets_are_bounded(monkeypatch):
    monkeypatch.setattr("app.ratelimit.MAX_BUCKETS", 3)
    buckets = TokenBuckets(RateLimit.parse("1/min,burst=1"))
    for address in ("a", "b", "c", "d"):
        assert buckets.take(address) == 0
    assert len(buckets._buckets) == 3 and buckets.take("d") > 0 and buckets.take("a") == 0  # "a" went first
