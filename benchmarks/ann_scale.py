"""The index `auto` picks, at corpus sizes up to a million, on clustered embeddings (benchmarks/clustered.py).

For one size: generate (or reuse from the cache) the vectors plus held-out queries, compute the exact top k by
brute force (the baseline, timed per query in this process), write and publish the version `auto` chooses
(kept in the cache too: a 1M build takes minutes), then start a fresh process that opens the version as the
service does, with one thread, times `IndexVersion.search` per query and reports its recall and its memory:
peak RSS, and how much of it is anonymous (heap) against file pages (memory-mapped index and vectors, which
the kernel can drop). A sweep of `efSearch` on the HNSW tier and issue 8's probe check the generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from benchmarks.clustered import ClusteredSpec, cached_vectors
from benchmarks.faiss_search import synthetic_model
from benchmarks.report import progress
from benchmarks.timing import latency_summary
from clipspace.index.choose import choose_factory, tuned_search_params
from clipspace.index.publish import current_version_name, open_current, publish_version
from clipspace.index.records import ItemRecord
from clipspace.index.writer import write_version

MEAN_CLUSTER_SIZE = 50  # points per centre, as in issue 8's probe (100k points, 2000 centres)
WARMUP_QUERIES = 20
QUERY_POOL = 1000  # held-out rows generated after the corpus: the cache key does not depend on --ann-queries
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class AnnResult:
    size: int
    dim: int
    spec: dict
    factory: str
    search_params: dict[str, int]
    build_seconds: float | None  # None: the version came from the cache
    recall_at_k: float
    version_search: dict[str, float]  # IndexVersion.search, one thread, fresh process: wall clock
    version_search_cpu: dict[str, float]  # the same calls in CPU time of the searching thread: what one core pays
    exact_search: dict[str, float]  # brute force over all vectors (numpy), the baseline
    exact_search_cpu: dict[str, float]
    vectors_bytes: int
    peak_rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    load_avg: list[float]


def measure_ann(size: int, dim: int, queries: int, k: int, cache_dir: Path) -> AnnResult:
    spec = ClusteredSpec(centres=max(1, size // MEAN_CLUSTER_SIZE))
    data = cached_vectors(spec, size + QUERY_POOL, dim, cache_dir)
    vectors, probes = data[:size], np.ascontiguousarray(data[size:size + min(queries + WARMUP_QUERIES, QUERY_POOL)])
    factory = choose_factory("auto", size, dim)
    index_dir, build_seconds = cached_version(vectors, factory, cache_dir)
    progress(f"exact top {k} of {len(probes)} queries by brute force, then {factory}, each in a fresh process")
    with tempfile.TemporaryDirectory(prefix="ann-probe-") as scratch:
        np.save(Path(scratch) / "probes.npy", probes)
        exact = _in_fresh_process(index_dir, Path(scratch), k, "exact")
        served = _in_fresh_process(index_dir, Path(scratch), k, "version")
    return AnnResult(size, dim, asdict(spec), factory, served["search_params"], build_seconds, served["recall"],
                     served["latency"], served["cpu"], exact["latency"], exact["cpu"], int(vectors.nbytes),
                     served["peak_rss"], served["rss_anon"], served["rss_file"], [round(v, 2) for v in os.getloadavg()])


def cached_version(vectors: np.ndarray, factory: str, cache_dir: Path) -> tuple[Path, float | None]:
    """A published version of `vectors` (item id = row) with a `factory` index, kept under `cache_dir` (a 1M build
    takes minutes); answers its folder and how long the build took (None: it came from the cache)."""
    size, dim = vectors.shape
    index_dir = cache_dir / f"ann-{size}x{dim}-{factory.replace(',', '_')}"
    if _cached_version_is_current(index_dir):
        return index_dir, None
    progress(f"building {factory} over {size:,} vectors (cached under {index_dir})")
    started = time.perf_counter()
    items = [ItemRecord(row, f"synthetic/{row:08d}.jpg", "", 0, 0, 0, 0, None) for row in range(size)]
    staging = write_version(index_dir, items, vectors, np.zeros((0, dim), np.float32), model=synthetic_model(dim),
                            factory=factory, corpus_root=index_dir, report={})
    publish_version(index_dir, staging)
    return index_dir, round(time.perf_counter() - started, 1)


def _cached_version_is_current(index_dir: Path) -> bool:
    """A cached version built before the tuning constants changed is built again, not measured."""
    if current_version_name(index_dir) is None:
        return False
    version = open_current(index_dir)
    return version.search_params() == tuned_search_params(faiss.read_index(str(version.path / "image.faiss")))


def measure_hnsw_ef(size: int, dim: int, queries: int, k: int, cache_dir: Path, spec: ClusteredSpec,
                    ef_values: tuple[int, ...] = (16, 32, 64, 128, 256)) -> list[dict]:
    """Recall and one-thread latency of HNSW32 at each efSearch, raw FAISS, against Flat on the same vectors."""
    data = cached_vectors(spec, size + QUERY_POOL, dim, cache_dir)
    vectors, probes = np.ascontiguousarray(data[:size]), np.ascontiguousarray(data[size:size + queries])
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        _, truth = flat.search(probes, k)
        rows = [{"factory": "Flat", "efSearch": None, "recall_at_k": 1.0, **_timed(flat, probes, k)}]
        faiss.omp_set_num_threads(threads)  # building is not what is measured
        progress(f"building HNSW32 over {size:,} vectors")
        hnsw = faiss.index_factory(dim, "HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
        hnsw.add(vectors)
        faiss.omp_set_num_threads(1)
        for ef in ef_values:
            hnsw.hnsw.efSearch = ef
            _, found = hnsw.search(probes, k)
            rows.append({"factory": "HNSW32,Flat", "efSearch": ef, "recall_at_k": _recall(found, truth),
                         **_timed(hnsw, probes, k)})
    finally:
        faiss.omp_set_num_threads(threads)
    return [{**row, "size": size, "spec": asdict(spec), "load_avg": [round(v, 2) for v in os.getloadavg()]}
            for row in rows]


def _timed(index: faiss.Index, probes: np.ndarray, k: int) -> dict[str, float]:
    seconds = []
    for query in probes:
        started = time.perf_counter()
        index.search(query[None], k)
        seconds.append(time.perf_counter() - started)
    return latency_summary(seconds)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(row) & set(expected)) / len(expected) for row, expected in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)), 4)


def _in_fresh_process(index_dir: Path, scratch: Path, k: int, mode: str) -> dict:
    """Run `_exact_search` or `_version_search` in a new one-thread process, so its RSS is its own."""
    answer = subprocess.run([sys.executable, "-m", "benchmarks.ann_scale", str(index_dir), str(scratch), str(k), mode],
                            env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, check=False)
    if answer.returncode != 0:
        raise RuntimeError(f"the {mode} search process failed: {answer.stderr.strip()[-2000:]}")
    return json.loads(answer.stdout)


def _exact_search(index_dir: Path, scratch: Path, k: int) -> dict:
    """The baseline and the ground truth: every query against every stored vector, one thread."""
    # One array for the whole loop: a memory map here, gathered once if the version keeps its vectors in shards.
    vectors, probes = np.asarray(open_current(index_dir).image_vectors()), np.load(scratch / "probes.npy")
    truth, seconds, cpu = [], [], []
    for query in probes:
        started, started_cpu = time.perf_counter(), time.thread_time()
        scores = vectors @ query
        top = np.argpartition(-scores, k)[:k]
        truth.append(top[np.argsort(-scores[top])])
        seconds.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    np.save(scratch / "truth.npy", np.array(truth))
    return {"latency": latency_summary(seconds[WARMUP_QUERIES:]), "cpu": latency_summary(cpu[WARMUP_QUERIES:])}


def _version_search(index_dir: Path, scratch: Path, k: int) -> dict:
    """Open the version as the service does (one FAISS thread), search every query, then read /proc."""
    faiss.omp_set_num_threads(1)
    probes, truth = np.load(scratch / "probes.npy"), np.load(scratch / "truth.npy")
    version = open_current(index_dir)
    rows, seconds, cpu = [], [], []
    for query in probes:
        started, started_cpu = time.perf_counter(), time.thread_time()
        hits = version.search(query, k)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        rows.append([hit.id for hit in hits])  # item id == row in this benchmark
    status = _proc_status()
    return {"recall": _recall(np.array(rows[WARMUP_QUERIES:]), truth[WARMUP_QUERIES:]),
            "latency": latency_summary(seconds[WARMUP_QUERIES:]), "cpu": latency_summary(cpu[WARMUP_QUERIES:]),
            "search_params": version.search_params(),
            "peak_rss": status["VmHWM"], "rss_anon": status["RssAnon"], "rss_file": status["RssFile"]}


def _proc_status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


if __name__ == "__main__":
    measure = _exact_search if sys.argv[4:] == ["exact"] else _version_search
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
