"""A model switch under load (issue 22): the embedded model served to N clients while the real builder, in its own
process, builds an index with another model (ViT-B-32 with random weights: nothing to download) into the same
folder, and the service takes the new version up.

Goals: every answer 200; never a mix (each answer's model is its version's model, and no answer from the old
version once the new one has answered); the peak resident memory of the switch at most twice that of the new
model served alone (both models side by side for a moment, nothing more). tests/test_model_switch.py guards the
same with tiny models.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.latency import READY_TIMEOUT_S, REQUEST_TIMEOUT_S
from benchmarks.load import WARMUP_S, _drive, _image_ids, _send
from benchmarks.report import progress
from clipspace.index.publish import current_version_name
from tests.launcher import REPO_ROOT, launched

MAX_PEAK_RATIO = 2.0
# After the new model's first answer the clients go on this long, and until each has had this many answers from it:
# an old answer among them would be a mix.
AFTER_SWITCH_S = 5.0
AFTER_SWITCH_ANSWERS = 3
SWITCH_TIMEOUT_S = 600.0
SETTLE_S = 5.0  # quiet after the clients stop: the old model is freed, and trimmed at the next poll of `current`
ERROR_SAMPLES = 5


@dataclass(frozen=True)
class Answer:
    client: int
    sent: float  # seconds since the new build started
    received: float
    failure: str | None
    model: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class SwitchResult:
    clients: int
    kinds: list[str]
    models: dict[str, str]  # index version -> its model, as /info reported it while serving that version
    requests: int  # from the new build's start until the clients stop
    errors: int
    error_samples: list[str]
    answers_by_version: dict[str, int]
    published_s: float  # the new build's start -> `current` names the new version
    first_new_s: float  # -> the first answer from the new version
    last_old_s: float  # -> the last answer from the old version
    mixed: int  # answers whose model is not their version's, or from the old version after the first new answer
    memory_old: dict[str, float]  # the old model alone, after a warm-up under load
    switch_peak_rss_mb: float  # from the new build's start to the end (VmHWM restarted then)
    memory_new: dict[str, float]  # the new model alone, a few quiet seconds after the clients stop
    peak_ratio: float  # switch peak / the new model's settled RSS
    goals_met: bool


def measure_switch(images: Path, uploads: list[bytes], work_dir: Path, service_env: dict[str, str], clients: int,
                   new_model: tuple[str, str], builder_args: list[str]) -> SwitchResult:
    """Serve an index built with the builder's defaults (the embedded model), then build `new_model` (name,
    pretrained) into the same folder under `clients` clients."""
    index = work_dir / "switch-index"
    progress("switch: building the first index with the embedded model")
    _build(["--images", str(images), "--index", str(index), *builder_args], work_dir / "switch-build-old.log")
    env = {**service_env, "CLIPSPACE_INDEX_DIR": str(index)}  # `current` polled every 2 s, as by default
    with launched(env, work_dir / "switch-uvicorn.log", uvicorn_args=("--log-level", "warning",
                                                                     "--no-access-log")) as service:
        service.wait_for("/readyz", READY_TIMEOUT_S)
        before = httpx.get(f"{service.url}/info", timeout=REQUEST_TIMEOUT_S).json()
        paths = httpx.get(f"{service.url}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()["paths"]
        kinds = ["text", "image"] + (["composed"] if "post" in paths.get("/search", {}) else [])
        progress(f"switch: {clients} clients warming up on {before['model']['model']}")
        asyncio.run(_drive(service.url, kinds, uploads, clients, WARMUP_S))
        memory_old = service.memory_mb()
        service.reset_peak_memory()
        progress(f"switch: building {new_model[0]} into the served folder under load")
        command = [sys.executable, "-m", "index_builder", "--images", str(images), "--index", str(index),
                   "--model", new_model[0], "--pretrained", new_model[1], "--quiet", *builder_args]
        answers, published = asyncio.run(_switch_under_load(
            service.url, kinds, uploads, clients, index, command, work_dir / "switch-build-new.log"))
        peak = service.memory_mb()["peak_rss_mb"]
        time.sleep(SETTLE_S)
        memory_new = service.memory_mb()
        after = httpx.get(f"{service.url}/info", timeout=REQUEST_TIMEOUT_S).json()
    return _judged(answers, published, clients, kinds, {before["index_version"]: before["model"]["model"],
                                                         after["index_version"]: after["model"]["model"]},
                   before["index_version"], memory_old, peak, memory_new)


def _build(args: list[str], log: Path) -> None:
    with open(log, "w") as output:
        done = subprocess.run([sys.executable, "-m", "index_builder", "--quiet", *args], cwd=REPO_ROOT,
                              stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"the builder failed ({done.returncode}):\n{log.read_text()[-2000:]}")


async def _switch_under_load(base_url: str, kinds: list[str], uploads: list[bytes], clients: int, index: Path,
                             command: list[str], log: Path) -> tuple[list[Answer], float]:
    """Start the builder, and query until the new version has answered for AFTER_SWITCH_S seconds and
    AFTER_SWITCH_ANSWERS times to each client. Answers the answers and when `current` moved, both in seconds
    since the builder started."""
    old_version = current_version_name(index)
    answers: list[Answer] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        image_ids = await _image_ids(client)
        with open(log, "w") as output:
            started = time.monotonic()
            builder = await asyncio.create_subprocess_exec(*command, cwd=REPO_ROOT, stdout=output,
                                                           stderr=subprocess.STDOUT)

            async def loop(number: int) -> None:
                rng = random.Random(number)
                for kind in itertools.islice(itertools.cycle(kinds), number % len(kinds), None):
                    if stop.is_set():
                        return
                    answers.append(await _answer(client, number, kind, rng, uploads, image_ids, started))

            clients_done = asyncio.gather(*(loop(number) for number in range(clients)))
            try:
                published = await _published(index, old_version, builder, started, log)
                await _until(lambda: _new_answers(answers, old_version, clients) >= 1, started)
                await asyncio.sleep(AFTER_SWITCH_S)
                await _until(lambda: _new_answers(answers, old_version, clients) >= AFTER_SWITCH_ANSWERS, started)
            finally:
                stop.set()
                await clients_done
                if builder.returncode is None:
                    await builder.wait()
    return answers, published


def _new_answers(answers: list[Answer], old_version: str | None, clients: int) -> int:
    """The fewest answers any client has had from a version other than `old_version`."""
    return min(sum(answer.client == number and answer.version not in (None, old_version) for answer in answers)
               for number in range(clients))


async def _until(condition: Callable[[], bool], started: float) -> None:
    while not condition():
        if time.monotonic() - started > SWITCH_TIMEOUT_S:
            raise RuntimeError(f"the new version did not answer every client within {SWITCH_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)


async def _published(index: Path, old_version: str | None, builder: asyncio.subprocess.Process, started: float,
                     log: Path) -> float:
    """Seconds from the builder's start until `current` names another version; fails if the builder does."""
    while current_version_name(index) == old_version:
        if builder.returncode is not None:
            raise RuntimeError(f"the builder exited with {builder.returncode} before publishing:\n"
                               f"{log.read_text()[-2000:]}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _answer(client: httpx.AsyncClient, number: int, kind: str, rng: random.Random, uploads: list[bytes],
                  image_ids: list[int], started: float) -> Answer:
    sent = time.monotonic() - started
    try:
        response = await _send(client, kind, rng, uploads, image_ids)
    except httpx.HTTPError as error:
        return Answer(number, sent, time.monotonic() - started, f"{kind}: {error!r}")
    received = time.monotonic() - started
    if response.status_code != 200:
        return Answer(number, sent, received, f"{kind}: {response.status_code} {response.text[:200]}")
    body = response.json()
    return Answer(number, sent, received, None, body["model"], body["index_version"])


def _judged(answers: list[Answer], published: float, clients: int, kinds: list[str], models: dict[str, str],
            old_version: str, memory_old: dict[str, float], peak: float, memory_new: dict[str, float]) -> SwitchResult:
    served = [answer for answer in answers if answer.failure is None]
    first_new = min(answer.received for answer in served if answer.version != old_version)
    mixed = [answer for answer in served if answer.model != models.get(answer.version)
             or (answer.version == old_version and answer.sent > first_new)]
    errors = [answer.failure for answer in answers if answer.failure is not None]
    by_version = {version: sum(answer.version == version for answer in served) for version in models}
    ratio = peak / memory_new["rss_mb"]
    return SwitchResult(
        clients=clients, kinds=kinds, models=models, requests=len(answers), errors=len(errors),
        error_samples=errors[:ERROR_SAMPLES], answers_by_version=by_version, published_s=round(published, 2),
        first_new_s=round(first_new, 2),
        last_old_s=round(max((a.received for a in served if a.version == old_version), default=0.0), 2),
        mixed=len(mixed), memory_old=memory_old, switch_peak_rss_mb=peak, memory_new=memory_new,
        peak_ratio=round(ratio, 3), goals_met=not errors and not mixed and ratio <= MAX_PEAK_RATIO)
