"""Text-query latency through the real service (uvicorn, HTTP, JSON) against the bare embed call it wraps.

The service runs as its own process, configured only by CLIPSPACE_* variables as in production; the
concurrent run sends queries from several clients at once, which is what the service's micro-batching is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.encoder import DualEncoder
from tests.launcher import launched

QUIET = ("--log-level", "warning", "--no-access-log")
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 60.0
ROUNDS = 6  # alternating blocks of bare and HTTP queries (see measure_latency)
QUERIES = (
    "a dog running on the beach", "red car parked in the street", "sunset over the mountains",
    "a bowl of fruit on a wooden table", "people walking in the rain with umbrellas", "a cat asleep on a sofa",
    "snow-covered pine trees", "a city skyline at night", "children playing football in a park",
    "an old bicycle leaning against a brick wall", "a plate of pasta", "waves crashing on rocks",
    "a yellow flower in a green field", "an airplane in a clear blue sky", "a bookshelf full of books",
    "a bridge across a river", "a person riding a horse", "a cup of coffee and a laptop",
)


@dataclass(frozen=True)
class LatencyResult:
    queries: int
    k: int
    http: dict[str, float]  # client-side, request written to body read, as wrk times it (`_raw_connection`)
    http_stdlib: dict[str, float]  # the same through the standard library's http.client, for reference
    http_httpx: dict[str, float]  # the same through httpx, a full-featured Python client, for reference
    http_server_took: dict[str, float]  # the service's own `took_ms`: embed + search, no HTTP
    bare_embed: dict[str, float]  # encoder.embed_texts([q]) in this process
    http_floor: dict[str, float]  # GET /healthz from the same client: what any request costs before any work
    ratio_http_over_bare_p50: float
    ratio_took_over_bare_p50: float  # the service's own cost of a query (took_ms) against the bare call
    ratio_http_over_bare_by_round: list[float]  # the same ratio within each pair of blocks: how much it drifts
    sequential_per_s: float
    concurrency: int
    concurrent: dict[str, float] | None  # latency under load, plus queries_per_s and speedup over sequential
    service_memory: dict[str, float]  # resident memory of the service after the queries


def measure_latency(encoder: DualEncoder, index_dir: Path, service_env: dict[str, str], queries: int, warmup: int,
                    k: int, concurrency: int, rounds: int = ROUNDS) -> LatencyResult:
    """Time the bare embed call and the service in alternating blocks, never at the same time.

    This machine's speed drifts by tens of percent over a minute (a neighbour on the host, a vCPU woken late):
    the bare call's median moved from 6.6 to 11.5 ms between fresh processes run one after the other
    (docs/decisions.md). Timing all of one side, then all of the other, puts that drift into the ratio;
    alternating `rounds` blocks of each spreads it over both sides, as an A/B comparison should.
    """
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index_dir)}
    with tempfile.TemporaryDirectory() as logs, launched(env, Path(logs) / "uvicorn.log",
                                                          uvicorn_args=QUIET) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        base_url = service.url
        progress(f"bare embed_texts and HTTP POST /search/text, {queries} queries each in {rounds} alternating "
                 "blocks")
        bare: list[float] = []
        client_seconds: list[float] = []
        server_ms: list[float] = []
        round_ratios = []
        for block in _blocks(queries, rounds):
            bare_block = time_calls(lambda i: encoder.embed_texts([QUERIES[i % len(QUERIES)]]), block, warmup)
            http_block, took_block = _sequential(_raw_connection, base_url, block, warmup, k)
            round_ratios.append(round(statistics.median(http_block) / statistics.median(bare_block), 3))
            bare += bare_block
            client_seconds += http_block
            server_ms += took_block
        floor = _healthz(base_url, queries, warmup)
        stdlib_seconds, _ = _sequential(_stdlib_connection, base_url, queries, warmup, k)
        httpx_seconds = _sequential_httpx(base_url, queries, warmup, k)
        concurrent = None
        if concurrency > 1:
            progress(f"HTTP POST /search/text, {concurrency} concurrent clients")
            concurrent = asyncio.run(_concurrent(base_url, concurrency, max(10, queries // 4), k))
        memory = service.memory_mb()
    sequential_per_s = len(client_seconds) / sum(client_seconds)
    if concurrent is not None:
        concurrent["speedup_over_sequential"] = round(concurrent["queries_per_s"] / sequential_per_s, 3)
    return LatencyResult(
        queries=queries, k=k, http=latency_summary(client_seconds), http_stdlib=latency_summary(stdlib_seconds),
        http_httpx=latency_summary(httpx_seconds),
        http_server_took=latency_summary([ms / 1000 for ms in server_ms]), bare_embed=latency_summary(bare),
        http_floor=latency_summary(floor),
        ratio_http_over_bare_p50=round(statistics.median(client_seconds) / statistics.median(bare), 3),
        ratio_took_over_bare_p50=round(statistics.median(server_ms) / 1000 / statistics.median(bare), 3),
        ratio_http_over_bare_by_round=round_ratios,
        sequential_per_s=round(sequential_per_s, 2), concurrency=concurrency, concurrent=concurrent,
        service_memory=memory)


def _blocks(queries: int, rounds: int) -> list[int]:
    """`queries` split into `rounds` near-equal blocks (fewer rounds when there are fewer queries)."""
    rounds = max(1, min(rounds, queries))
    return [queries // rounds + (1 if n < queries % rounds else 0) for n in range(rounds)]


def _sequential(connect: Connector, base_url: str, queries: int, warmup: int,
                k: int) -> tuple[list[float], list[float]]:
    """Seconds per text query over one keep-alive connection, and the service's took_ms of each.

    Only the exchange is timed: the bodies are encoded before and the answers checked after, as wrk does it.
    """
    bodies = [json.dumps(_body(i, k)).encode() for i in range(len(QUERIES))]
    answers: list[tuple[int, bytes]] = []
    with connect(base_url) as exchange:
        seconds = time_calls(lambda i: answers.append(exchange("POST", "/search/text", bodies[i % len(bodies)])),
                             queries, warmup)
    return seconds, [_check(*answer) for answer in answers[warmup:]]


def _healthz(base_url: str, queries: int, warmup: int) -> list[float]:
    """Seconds per GET /healthz from the same client: what any request costs before any work."""
    answers: list[tuple[int, bytes]] = []
    with _raw_connection(base_url) as exchange:
        seconds = time_calls(lambda _: answers.append(exchange("GET", "/healthz")), queries, warmup)
    if any(status != 200 for status, _ in answers):
        raise RuntimeError(f"GET /healthz answered {sorted({status for status, _ in answers})}")
    return seconds


Exchange = Callable[..., tuple[int, bytes]]  # exchange(method, path, body=None) -> (status, body)
Connector = Callable[[str], contextlib.AbstractContextManager[Exchange]]


@contextlib.contextmanager
def _raw_connection(base_url: str) -> Iterator[Exchange]:
    """HTTP/1.1 over one keep-alive socket, with no more client work than wrk does: write the request, read
    the head to its blank line, then Content-Length bytes of body.

    A Python HTTP library parses every answer's headers in Python, which costs 0.3-0.6 ms a query here on
    caches the forward pass has just emptied (`http_stdlib`, and more for `http_httpx`): the client's own
    time, not the service's. This client's p50 was within 0.1 ms of wrk's (-t1 -c1) against the same
    service (docs/decisions.md).
    """
    address = urlsplit(base_url)
    host = f"{address.hostname}:{address.port}".encode()
    sock = socket.create_connection((address.hostname, address.port), timeout=REQUEST_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: ".encode() + host + b"\r\n"
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        sock.sendall(head + b"\r\n" + (body or b""))
        received = b""
        while b"\r\n\r\n" not in received:
            received += _receive(sock)
        head, _, answer = received.partition(b"\r\n\r\n")
        length = _content_length(head)
        while len(answer) < length:
            answer += _receive(sock)
        return int(head.split(b" ", 2)[1]), answer

    try:
        yield exchange
    finally:
        sock.close()


def _receive(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise RuntimeError("the service closed the connection mid-answer")
    return data


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:300]!r}")


@contextlib.contextmanager
def _stdlib_connection(base_url: str) -> Iterator[Exchange]:
    """The same exchange through the standard library's `http.client`, for reference."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=REQUEST_TIMEOUT_S)

    def exchange(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection.request(method, path, body=body,
                           headers={} if body is None else {"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read()

    try:
        yield exchange
    finally:
        connection.close()


def _sequential_httpx(base_url: str, queries: int, warmup: int, k: int) -> list[float]:
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        return time_calls(lambda i: _check_response(client.post("/search/text", json=_body(i, k))), queries, warmup)


async def _concurrent(base_url: str, clients: int, queries_per_client: int, k: int) -> dict[str, float]:
    """`clients` loops each sending `queries_per_client` queries back to back; the first round is warm-up."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        async def one(i: int) -> float:
            started = time.perf_counter()
            _check_response(await client.post("/search/text", json=_body(i, k)))
            return time.perf_counter() - started

        async def loop(first: int) -> list[float]:
            return [await one(first + n) for n in range(queries_per_client)]

        await asyncio.gather(*(one(n) for n in range(clients)))
        started = time.perf_counter()
        per_client = await asyncio.gather(*(loop(c * queries_per_client) for c in range(clients)))
        wall = time.perf_counter() - started
    seconds = [value for values in per_client for value in values]
    return {**latency_summary(seconds), "queries_per_s": round(len(seconds) / wall, 2)}


def _body(i: int, k: int) -> dict:
    return {"text": QUERIES[i % len(QUERIES)], "k": k, "target": "image"}


def _check_response(answer: httpx.Response) -> float:
    return _check(answer.status_code, answer.content)


def _check(status: int, body: bytes) -> float:
    """A failed or empty answer would time an error path: stop the benchmark instead. Returns the server's took_ms."""
    if status != 200:
        raise RuntimeError(f"POST /search/text answered {status}: {body[:500].decode(errors='replace')}")
    payload = json.loads(body)
    if not payload["results"]:
        raise RuntimeError("POST /search/text answered no results; is the index empty?")
    return float(payload["took_ms"])
