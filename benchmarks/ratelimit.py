"""Rate-limit isolation: a key hammering a keyed service past its limit must not slow the other keys' queries.

One service, one rate limit for every key (`RATE`). Quiet keys each send text queries at a steady pace below the
limit; in alternate phases a hammering key joins, sending far past its limit, most of it refused with 429.
The quiet keys' p99 with the hammer against their p99 alone is the measure (goal: at most 1.2x). A control arm
sends the same hammering to a stub server instead: on a small shared machine the hammer's own CPU slows everyone,
and hammered / control is the service's share. Arms alternate, each leading a round in turn, so that whatever
else the machine does lands on all alike. The hammer runs in a process of its own, apart from the quiet clocks.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from app.keys import add_key
from benchmarks.latency import QUERIES, READY_TIMEOUT_S, REQUEST_TIMEOUT_S
from benchmarks.report import progress
from tests.launcher import launched

RATE = "3/s,burst=6"
QUIET_KEYS = 16
QUIET_PER_KEY_PER_S = 2.0  # below the limit: a quiet key is never refused
HAMMER_CONNECTIONS = 16
HAMMER_PER_S = 300  # offered: 100 times the limit
MAX_P99_RATIO = 1.2
ARMS = ("alone", "control", "hammered")


@dataclass(frozen=True)
class RateIsolationResult:
    rate_limit: str
    quiet_keys: int
    quiet_per_key_per_s: float
    hammer_connections: int
    hammer_offered_per_s: int
    rounds: int
    phase_seconds: float
    quiet_alone_ms: dict[str, float]  # n, p50, p99
    quiet_control_ms: dict[str, float]  # beside the same hammer aimed at a stub server: the machine's share
    quiet_hammered_ms: dict[str, float]
    quiet_errors: int
    hammer_answers: dict[str, int]  # status -> count
    hammer_per_s: float
    service_cpu_per_s: dict[str, float]  # CPU seconds the service used per second: alone, hammered
    service_cpu_us_per_hammer_request: float  # the difference spread over the hammer's requests (refused or not)
    p99_ratio: float  # hammered / alone: the goal
    p99_ratio_ok: bool
    p99_ratio_to_control: float  # hammered / control: the service's own share


def measure_rate_isolation(index_dir: Path, service_env: dict[str, str], work_dir: Path, rounds: int = 6,
                           phase_seconds: float = 10.0, hammer_per_s: int = HAMMER_PER_S) -> RateIsolationResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    keys_file = work_dir / "keys.txt"
    quiet = [add_key(keys_file, f"quiet-{number}") for number in range(QUIET_KEYS)]
    hammer = add_key(keys_file, "hammer")
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index_dir), "CLIPSPACE_API_KEYS_FILE": str(keys_file),
           "CLIPSPACE_RATE_LIMIT": RATE}
    with launched(env, work_dir / "uvicorn.log", uvicorn_args=("--log-level", "warning", "--no-access-log")) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        progress(f"rate-limit isolation: {QUIET_KEYS} quiet keys at {QUIET_PER_KEY_PER_S:g}/s each, a key sending "
                 f"{hammer_per_s}/s on {HAMMER_CONNECTIONS} connections past {RATE}; {rounds} rounds of "
                 f"{phase_seconds:.0f} s per phase")
        samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
        cpu = dict.fromkeys(ARMS, 0.0)
        errors = 0
        statuses: dict[str, int] = {}
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as hammers:
            hammers.submit(_hammer, service.url, hammer, 0.0, False, hammer_per_s).result()  # started and imported
            asyncio.run(_phase(service.url, quiet, None, min(5.0, phase_seconds)))  # warm-up, not counted
            for number in range(rounds):
                for arm in ARMS[number % len(ARMS):] + ARMS[:number % len(ARMS)]:  # each arm leads a round in turn
                    before = _cpu_seconds(service.pid)
                    hammering = None if arm == "alone" else (hammers, hammer, arm == "control", hammer_per_s)
                    got, failed, answered = asyncio.run(_phase(service.url, quiet, hammering, phase_seconds))
                    cpu[arm] += _cpu_seconds(service.pid) - before
                    samples[arm] += got
                    errors += failed
                    for status, count in (answered.items() if arm == "hammered" else ()):
                        statuses[status] = statuses.get(status, 0) + count
    alone, control, hammered = (_percentiles(samples[arm]) for arm in ARMS)
    ratio = hammered["p99_ms"] / alone["p99_ms"]
    hammer_requests, seconds = sum(statuses.values()), rounds * phase_seconds
    return RateIsolationResult(
        rate_limit=RATE, quiet_keys=QUIET_KEYS, quiet_per_key_per_s=QUIET_PER_KEY_PER_S,
        hammer_connections=HAMMER_CONNECTIONS, hammer_offered_per_s=hammer_per_s, rounds=rounds,
        phase_seconds=phase_seconds, quiet_alone_ms=alone, quiet_control_ms=control, quiet_hammered_ms=hammered,
        quiet_errors=errors, hammer_answers=dict(sorted(statuses.items())),
        hammer_per_s=round(hammer_requests / seconds, 1),
        service_cpu_per_s={arm: round(used / seconds, 3) for arm, used in cpu.items()},
        service_cpu_us_per_hammer_request=round((cpu["hammered"] - cpu["alone"]) / max(1, hammer_requests) * 1e6, 1),
        p99_ratio=round(ratio, 3), p99_ratio_ok=ratio <= MAX_P99_RATIO,
        p99_ratio_to_control=round(hammered["p99_ms"] / control["p99_ms"], 3))


async def _phase(base_url: str, quiet: list[str], hammering: tuple[ProcessPoolExecutor, str, bool, int] | None,
                 seconds: float) -> tuple[list[float], int, dict[str, int]]:
    """The quiet keys' latencies (ms) and failures, and the hammer's answers by status, over `seconds`.
    `hammering`: the hammer's process, its key, whether it is aimed at a stub instead of the service, its rate."""
    deadline = time.monotonic() + seconds
    samples: list[float] = []
    failures = 0

    async def steady(key: str, offset: float) -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            due = time.monotonic() + offset
            for number in range(10**9):
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    answer = await client.post("/search/text", json={"text": QUERIES[number % len(QUERIES)]})
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    samples.append((time.perf_counter() - started) * 1000)
                else:
                    failures += 1
                due += 1 / QUIET_PER_KEY_PER_S

    period = 1 / QUIET_PER_KEY_PER_S
    tasks = [steady(key, period * number / len(quiet)) for number, key in enumerate(quiet)]
    if hammering is None:
        await asyncio.gather(*tasks)
        return samples, failures, {}
    hammers, key, control, per_s = hammering
    hammer = asyncio.get_running_loop().run_in_executor(hammers, _hammer, base_url, key, seconds, control, per_s)
    *_, answered = await asyncio.gather(*tasks, hammer)
    return samples, failures, answered


def _hammer(base_url: str, key: str, seconds: float, control: bool, per_s: int) -> dict[str, int]:
    """`per_s` text queries a second with `key` over `HAMMER_CONNECTIONS` raw keep-alive connections (a
    wrk-like client: a Python HTTP library would spend more CPU than the service it hammers), for `seconds`.
    Answers by status; a connection the service closes is opened again. With `control`, the same traffic goes to
    a stub in this process that answers every request with a fixed 429: the machine's load without the service's."""
    address = urlsplit(base_url)
    body = json.dumps({"text": QUERIES[0]}).encode()
    request = (f"POST /search/text HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    answered: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def connection(offset: float) -> None:
        period = HAMMER_CONNECTIONS / per_s
        due = time.monotonic() + offset
        reader = writer = None
        while time.monotonic() < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += period
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(address.hostname, address.port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                status = head.split(b" ", 2)[1].decode()
                if b"connection: close" in head.lower():
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError) as error:
                status, writer = type(error).__name__, None
            answered[status] = answered.get(status, 0) + 1
        if writer is not None:
            writer.close()

    async def hammer() -> None:
        nonlocal address
        stub = await asyncio.start_server(_stub_answer, "127.0.0.1", 0) if control else None
        if stub:
            address = urlsplit(f"http://127.0.0.1:{stub.sockets[0].getsockname()[1]}")
        await asyncio.gather(*(connection(number / per_s) for number in range(HAMMER_CONNECTIONS)))
        if stub:
            stub.close()

    asyncio.run(hammer())
    return answered


STUB_ANSWER = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
               b"content-length: 18\r\n\r\n{\"detail\": \"stub\"}")


async def _stub_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            writer.write(STUB_ANSWER)
    except (OSError, asyncio.IncompleteReadError):
        writer.close()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(milliseconds: list[float]) -> dict[str, float]:
    values = np.asarray(milliseconds or [float("nan")])
    return {"n": len(milliseconds), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2)}
