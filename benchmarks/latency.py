"""Text-query latency through the real service (uvicorn, HTTP, JSON) against the bare embed call it wraps.

The service runs as its own process, configured only by CLIPSPACE_* variables as in production; the
concurrent run sends queries from several clients at once, which is what the service's micro-batching is for.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from app.launcher import launched
from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.encoder import DualEncoder

QUIET = ("--log-level", "warning", "--no-access-log")
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 60.0
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
    http: dict[str, float]  # client-side, lean keep-alive client: request sent to response parsed
    http_httpx: dict[str, float]  # the same through httpx, a full-featured Python client, for reference
    http_server_took: dict[str, float]  # the service's own `took_ms`: embed + search, no HTTP
    bare_embed: dict[str, float]  # encoder.embed_texts([q]) in this process
    http_floor: dict[str, float]  # GET /healthz from the same client: what any request costs before any work
    ratio_http_over_bare_p50: float
    ratio_took_over_bare_p50: float  # the service's own cost of a query (took_ms) against the bare call
    sequential_per_s: float
    concurrency: int
    concurrent: dict[str, float] | None  # latency under load, plus queries_per_s and speedup over sequential
    service_memory: dict[str, float]  # resident memory of the service after the queries


def measure_latency(encoder: DualEncoder, index_dir: Path, service_env: dict[str, str], queries: int, warmup: int,
                    k: int, concurrency: int) -> LatencyResult:
    """Time the bare embed call first, then the service (so the two never share the CPU)."""
    progress(f"bare embed_texts, {queries} queries")
    bare = time_calls(lambda i: encoder.embed_texts([QUERIES[i % len(QUERIES)]]), queries, warmup)
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index_dir)}
    with tempfile.TemporaryDirectory() as logs, launched(env, Path(logs) / "uvicorn.log",
                                                          uvicorn_args=QUIET) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        base_url = service.url
        progress(f"HTTP POST /search/text, {queries} sequential queries")
        client_seconds, server_ms, floor = _sequential(base_url, queries, warmup, k)
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
        queries=queries, k=k, http=latency_summary(client_seconds), http_httpx=latency_summary(httpx_seconds),
        http_server_took=latency_summary([ms / 1000 for ms in server_ms]), bare_embed=latency_summary(bare),
        http_floor=latency_summary(floor),
        ratio_http_over_bare_p50=round(statistics.median(client_seconds) / statistics.median(bare), 3),
        ratio_took_over_bare_p50=round(statistics.median(server_ms) / 1000 / statistics.median(bare), 3),
        sequential_per_s=round(sequential_per_s, 2), concurrency=concurrency, concurrent=concurrent,
        service_memory=memory)


def _sequential(base_url: str, queries: int, warmup: int, k: int) -> tuple[list[float], list[float], list[float]]:
    """One keep-alive connection of the standard library's lean client, as wrk or hey would hold one.

    What is timed is then the service and the loopback; a full-featured Python client spends ~0.8 ms of its
    own per query on this 2-core machine (`http_httpx`, docs/decisions.md).
    """
    server_ms: list[float] = []
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=REQUEST_TIMEOUT_S)

    def exchange(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={} if body is None else {"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read()

    def ask(i: int) -> None:
        server_ms.append(_check(*exchange("POST", "/search/text", _body(i, k))))

    def healthz(_: int) -> None:
        status, _ = exchange("GET", "/healthz")
        if status != 200:
            raise RuntimeError(f"GET /healthz answered {status}")

    try:
        seconds = time_calls(ask, queries, warmup)
        floor = time_calls(healthz, queries, warmup)
    finally:
        connection.close()
    return seconds, server_ms[warmup:], floor


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
