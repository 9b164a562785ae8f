"""A bounded loopback load test: N clients for T seconds against a real service, mixing every kind of query.

Each client sends text queries, image uploads and, when the service publishes `POST /search` in its OpenAPI
document, composed queries, back to back. Any answer but 200 is an error. The service's resident memory is read
after a warm-up and again at the end: a leak shows as growth. Traffic goes to 127.0.0.1 only, and stops at the
deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.latency import QUERIES, READY_TIMEOUT_S, REQUEST_TIMEOUT_S
from benchmarks.report import progress
from tests.launcher import launched

MAX_RSS_GROWTH = 0.10
ERROR_SAMPLES = 5
WARMUP_S = 15.0


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float
    kinds: list[str]
    requests: int
    errors: int
    error_samples: list[str]
    queries_per_s: float
    latency_ms: dict[str, float]  # all kinds together: p50, p99
    by_kind: dict[str, dict[str, float]]  # per kind: n, p50, p99
    memory_before: dict[str, float]  # after a warm-up at full concurrency
    memory_after: dict[str, float]
    rss_growth: float
    rss_growth_ok: bool


def measure_load(index_dir: Path, images: list[Path], service_env: dict[str, str], clients: int,
                 seconds: float, log: Path) -> LoadResult:
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index_dir)}
    with launched(env, log, uvicorn_args=("--log-level", "warning", "--no-access-log")) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        paths = httpx.get(f"{service.url}/openapi.json", timeout=30).json()["paths"]
        kinds = ["text", "image"] + (["composed"] if "post" in paths.get("/search", {}) else [])
        uploads = [path.read_bytes() for path in images]
        progress(f"load test: {clients} clients for {seconds:.0f} s ({', '.join(kinds)}); warming up")
        # At full concurrency: batches reach their largest size and the allocator its working set, so what
        # grows after this is a leak, not the first big batch.
        asyncio.run(_drive(service.url, kinds, uploads, clients, seconds=min(WARMUP_S, seconds)))
        before = service.memory_mb()
        progress("load test: measuring")
        started = time.perf_counter()
        samples, errors = asyncio.run(_drive(service.url, kinds, uploads, clients, seconds))
        wall = time.perf_counter() - started
        after = service.memory_mb()
    latencies = [ms for kind_samples in samples.values() for ms in kind_samples]
    growth = after["rss_mb"] / before["rss_mb"] - 1
    return LoadResult(
        clients=clients, seconds=round(wall, 2), kinds=kinds, requests=len(latencies) + len(errors),
        errors=len(errors), error_samples=errors[:ERROR_SAMPLES],
        queries_per_s=round((len(latencies) + len(errors)) / wall, 2), latency_ms=_percentiles(latencies),
        by_kind={kind: _percentiles(values) for kind, values in samples.items()}, memory_before=before,
        memory_after=after, rss_growth=round(growth, 4), rss_growth_ok=growth <= MAX_RSS_GROWTH)


async def _drive(base_url: str, kinds: list[str], uploads: list[bytes], clients: int,
                 seconds: float) -> tuple[dict[str, list[float]], list[str]]:
    """`clients` loops, each cycling through `kinds` from its own offset, until the deadline."""
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        image_ids = await _image_ids(client)

        async def loop(number: int) -> None:
            rng = random.Random(number)
            for kind in itertools.islice(itertools.cycle(kinds), number % len(kinds), None):
                if time.monotonic() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    answer = await _send(client, kind, rng, uploads, image_ids)
                    failure = None if answer.status_code == 200 else f"{kind}: {answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as error:
                    failure = f"{kind}: {error!r}"
                if failure:
                    errors.append(failure)
                else:
                    samples[kind].append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(loop(number) for number in range(clients)))
    return samples, errors


async def _image_ids(client: httpx.AsyncClient) -> list[int]:
    answer = await client.post("/search/text", json={"text": QUERIES[0], "k": 50})
    answer.raise_for_status()
    return [hit["id"] for hit in answer.json()["results"]]


async def _send(client: httpx.AsyncClient, kind: str, rng: random.Random, uploads: list[bytes],
                image_ids: list[int]) -> httpx.Response:
    text = rng.choice(QUERIES)
    if kind == "text":
        return await client.post("/search/text", json={"text": text, "k": 10})
    if kind == "image":
        return await client.post("/search/image", params={"k": 10},
                                 files={"file": ("query.jpg", rng.choice(uploads), "image/jpeg")})
    terms = [{"image_id": rng.choice(image_ids)}, {"text": text, "weight": 0.5}]
    return await client.post("/search", json={"terms": terms, "k": 10})


def _percentiles(milliseconds: list[float]) -> dict[str, float]:
    if not milliseconds:
        return {"n": 0}
    values = np.asarray(milliseconds)
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2)}
