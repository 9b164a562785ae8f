"""The towers on ONNX Runtime against torch: the service's memory, start-up and text-query latency, in one run.

For each model: an fp32 index of the same pictures, the towers' export and its int8 copy (timed), and three services
on that index, CLIPSPACE_RUNTIME=torch, onnx and onnx-int8, all up at once, each started on a warm cache (the export
and the copy made before it starts; ready_s is launch to /readyz). Queries go to one runtime after the other in
alternating blocks (this machine's speed drifts within a minute, docs/decisions.md), and the bare calls (torch's
`embed_texts` in this process; ONNX Runtime's in a process of its own without torch, benchmarks/bare_onnx.py) are
timed in the same blocks. Where an HTTP query's time goes beyond the bare call: `took_ms` (the service's own time,
route to answer: the model thread's hand-off, search, relevance, JSON) and a GET /healthz from the same client (what
any request costs before any work: the transport's floor). Each service's memory is read after its text queries and
a burst of image uploads, so both towers have run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from benchmarks.corpus import Corpus
from benchmarks.latency import QUERIES, QUIET, READY_TIMEOUT_S, _blocks, _healthz, _raw_connection, _sequential
from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.encoder import DualEncoder, load_encoder
from clipspace.onnx_export import export_towers
from clipspace.onnx_int8 import int8_towers
from clipspace.runtimes import ONNX, ONNX_INT8, TORCH
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.launcher import launched

RUNTIMES = (TORCH, ONNX, ONNX_INT8)
IMAGE_UPLOADS = 32
# A pause before each block, so that the worker threads of the runtime timed before (ORT's pool, GNU OpenMP's team)
# have stopped spinning and do not take the cores from the one timed now.
SETTLE_S = 0.5


@dataclass(frozen=True)
class RuntimeResult:
    model: str
    images: int
    export_s: float
    int8_copy_s: float
    onnx_detail: dict[str, str]  # what /info says of each ONNX service's runtime
    ready_s: dict[str, float]  # launch to /readyz answering 200, per runtime
    http: dict[str, dict[str, float]]  # client-side text query over HTTP, per runtime
    bare: dict[str, dict[str, float]]  # the bare embed call in this process, per runtime
    service_memory: dict[str, dict[str, float]]  # after the queries and IMAGE_UPLOADS image uploads, per runtime
    ratio_over_torch_http_p50: dict[str, float]  # per ONNX runtime
    ratio_over_torch_rss: dict[str, float]
    ratio_http_over_bare_p50: dict[str, float]  # the service's overhead around the bare call, per runtime
    took_p50_ms: dict[str, float]  # the service's own time for the query (its took_ms), per runtime
    healthz_p50_ms: dict[str, float]  # GET /healthz from the same client: the floor of any request, per runtime
    onnx_memory_after_a_rerank: dict[str, float] | None  # the matcher loads torch and the model beside ONNX towers


def measure_runtimes(encoders: list[DualEncoder], corpus: Corpus, work_dir: Path, service_env: dict[str, str],
                     queries: int, threads: int | None, images: int = 64) -> list[dict]:
    """Each model's numbers (fp32: the precision ONNX Runtime serves), on the first `images` pictures."""
    results = []
    for encoder in encoders:
        if encoder.spec.precision != "fp32":
            encoder = load_encoder(replace(encoder.spec, precision="fp32"), threads=threads)
        results.append(_measure(encoder, corpus, work_dir / f"runtime-{len(results)}", service_env, queries, threads,
                                images))
    return [result.__dict__ for result in results]


def _measure(encoder: DualEncoder, corpus: Corpus, work_dir: Path, service_env: dict[str, str], queries: int,
             threads: int | None, images: int) -> RuntimeResult:
    index = work_dir / "index"
    pictures = work_dir / "images"
    pictures.mkdir(parents=True)
    for number, path in enumerate(corpus.paths[:images]):
        shutil.copyfile(corpus.root / path, pictures / f"{number:05d}{Path(path).suffix}")
    progress(f"runtime: indexing {images} pictures with {encoder.spec.model} in fp32, exporting its towers")
    build_index(BuildOptions(images=pictures, index=index, progress=False), encoder)
    started = time.perf_counter()
    onnx = export_towers(encoder, index, threads)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    folders = {ONNX: onnx.folder, ONNX_INT8: int8_towers(onnx, index, threads).folder}
    int8_copy_s = time.perf_counter() - started
    uploads = [(corpus.root / path).read_bytes() for path in corpus.paths[:IMAGE_UPLOADS]]
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        bare = {TORCH: lambda block: time_calls(lambda i: encoder.embed_texts([QUERIES[i % len(QUERIES)]]), block, 5)}
        for runtime, folder in folders.items():
            bare[runtime] = stack.enter_context(_bare_process(folder, runtime, threads))
        services, ready_s = {}, {}
        for runtime in RUNTIMES:
            started = time.perf_counter()
            services[runtime] = stack.enter_context(launched(
                {**service_env, "CLIPSPACE_INDEX_DIR": str(index), "CLIPSPACE_RUNTIME": runtime},
                Path(logs) / f"{runtime}.log", uvicorn_args=QUIET))
            services[runtime].wait_for("/readyz", READY_TIMEOUT_S)
            ready_s[runtime] = round(time.perf_counter() - started, 2)
        detail = {}
        for runtime in (ONNX, ONNX_INT8):
            answer = httpx.get(services[runtime].url + "/info").json()["runtime"]
            if answer["name"] != runtime:
                raise RuntimeError(f"the {runtime} service runs on {answer['name']}: {answer['detail']}")
            detail[runtime] = answer["detail"]
        progress(f"runtime: {queries} text queries per runtime, bare and over HTTP, in alternating blocks")
        http_s: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        bare_s: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        took_ms: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        healthz_s: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        for block in _blocks(queries, 6):
            for runtime in RUNTIMES:
                time.sleep(SETTLE_S)
                bare_s[runtime] += bare[runtime](block)
                time.sleep(SETTLE_S)
                seconds, took = _sequential(_raw_connection, services[runtime].url, block, 5, 10)
                http_s[runtime] += seconds
                took_ms[runtime] += took
                healthz_s[runtime] += _healthz(services[runtime].url, 20, 5)
        memory = {}
        for runtime, service in services.items():
            with httpx.Client(base_url=service.url, timeout=60) as client:
                for data in uploads:
                    client.post("/search/image", files={"file": ("q.jpg", data, "image/jpeg")}).raise_for_status()
            memory[runtime] = service.memory_mb()
        after_rerank = _memory_after_a_rerank(services[ONNX])
    p50 = {runtime: statistics.median(values) for runtime, values in http_s.items()}
    return RuntimeResult(
        model=encoder.spec.model, images=images, export_s=round(export_s, 1), int8_copy_s=round(int8_copy_s, 1),
        onnx_detail=detail,
        ready_s=ready_s, http={runtime: latency_summary(values) for runtime, values in http_s.items()},
        bare={runtime: latency_summary(values) for runtime, values in bare_s.items()}, service_memory=memory,
        ratio_over_torch_http_p50={runtime: round(p50[runtime] / p50[TORCH], 3) for runtime in (ONNX, ONNX_INT8)},
        ratio_over_torch_rss={runtime: round(memory[runtime]["rss_mb"] / memory[TORCH]["rss_mb"], 3)
                              for runtime in (ONNX, ONNX_INT8)},
        ratio_http_over_bare_p50={runtime: round(p50[runtime] / statistics.median(bare_s[runtime]), 3)
                                  for runtime in RUNTIMES},
        took_p50_ms={runtime: round(statistics.median(values), 3) for runtime, values in took_ms.items()},
        healthz_p50_ms={runtime: round(statistics.median(values) * 1000, 3) for runtime, values in healthz_s.items()},
        onnx_memory_after_a_rerank=after_rerank)


@contextlib.contextmanager
def _bare_process(folder: Path, runtime: str, threads: int | None):
    """A call timing `block` bare ONNX Runtime text calls (after 5 untimed) in benchmarks/bare_onnx.py's process."""
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_onnx", str(folder), runtime, str(threads or 0)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if json.loads(process.stdout.readline())["torch_imported"]:
        raise RuntimeError("the bare ONNX Runtime process imported torch")

    def timed(block: int) -> list[float]:
        process.stdin.write(json.dumps({"texts": [QUERIES[i % len(QUERIES)] for i in range(block + 5)],
                                        "warmup": 5}) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    try:
        yield timed
    finally:
        process.stdin.close()
        process.wait(30)


def _memory_after_a_rerank(service) -> dict[str, float] | None:
    """The ONNX service's memory once a re-rank has loaded torch and the matcher; None for a model without one."""
    with httpx.Client(base_url=service.url, timeout=120) as client:
        if not client.get("/info").json()["rerank"]["available"]:
            return None
        client.post("/search", json={"terms": [{"text": QUERIES[0]}], "rerank": True}).raise_for_status()
    return service.memory_mb()
