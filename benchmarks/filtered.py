"""Filtered search (clipspace.index.filtered) against post-filtering the unfiltered top 1,000, on clustered embeddings.

For one size and index kind: the version `ann_scale.cached_version` keeps (the same vectors, factory string and
tuned parameters as a built index), opened as the service opens it (memory-mapped FAISS index and vector shards).
For each selectivity, one seeded random selection of rows and the held-out queries; the truth is the exact top k
of the selection by brute force. One thread throughout, as one query of the service runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from benchmarks.ann_scale import MEAN_CLUSTER_SIZE, QUERY_POOL, WARMUP_QUERIES, cached_version
from benchmarks.clustered import ClusteredSpec, cached_vectors
from benchmarks.report import progress
from benchmarks.timing import latency_summary
from clipspace.index.choose import choose_factory
from clipspace.index.filtered import EXACT_SCAN_FLOATS, plan_search, search_exactly, search_selected
from clipspace.index.publish import open_current

SELECTIVITIES = (0.1, 0.01, 0.001)
POST_FILTER_DEPTH = 1_000  # how deep a post-filter looks into the unfiltered ranking
SELECTION_SEED = 19


def measure_filtered(size: int, dim: int, kind: str, selectivities: tuple[float, ...], queries: int, k: int,
                     cache_dir: Path) -> dict:
    """Per selectivity: whether every result matches, recall@k against exact filtered search and p50/p95 time,
    for `search_selected` and for post-filtering; `kind` is a factory string or `auto` (the tier for `size`)."""
    spec = ClusteredSpec(centres=max(1, size // MEAN_CLUSTER_SIZE))
    data = cached_vectors(spec, size + QUERY_POOL, dim, cache_dir)
    probes = np.ascontiguousarray(data[size:size + min(queries + WARMUP_QUERIES, QUERY_POOL)])
    factory = choose_factory(kind, size, dim)
    index_dir, build_seconds = cached_version(data[:size], factory, cache_dir)
    version = open_current(index_dir)
    index = faiss.read_index(str(version.path / "image.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    params, vectors = version.search_params(), version.image_vectors()
    space = faiss.ParameterSpace()  # the unfiltered search of the post-filter runs with the tuned parameters
    for name, value in params.items():
        if name != "k_factor":
            space.set_index_parameter(index, name, value)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        results = [_measure_one(index, vectors, params, probes, k, fraction, _selection(size, fraction))
                   for fraction in selectivities]
        everything = np.arange(size, dtype=np.int64)
        unfiltered = _timed(lambda query: search_selected(index, vectors, query, k, params, everything)[0], probes)
        budget_rows = _selection(size, min(1.0, EXACT_SCAN_FLOATS / dim / size))
        at_budget = _timed(lambda query: search_exactly(vectors, query, k, budget_rows)[0], probes)
    finally:
        faiss.omp_set_num_threads(threads)
    return {"size": size, "dim": dim, "factory": factory, "search_params": params, "build_seconds": build_seconds,
            "exact_scan_floats": EXACT_SCAN_FLOATS, "queries": len(probes) - WARMUP_QUERIES, "k": k,
            "post_filter_depth": POST_FILTER_DEPTH, "selectivities": results,
            "unfiltered": latency_summary(unfiltered[1]),
            "exact_scan_at_budget": {"rows": len(budget_rows), **latency_summary(at_budget[1])}}


def _selection(size: int, fraction: float) -> np.ndarray:
    """A seeded random selection: rows are independent of the clusters, as a folder or a date range would be."""
    count = max(1, round(size * fraction))
    return np.sort(np.random.default_rng(SELECTION_SEED).choice(size, count, replace=False)).astype(np.int64)


def _measure_one(index: faiss.Index, vectors: np.ndarray, params: dict[str, int], probes: np.ndarray, k: int,
                 fraction: float, rows: np.ndarray) -> dict:
    plan = plan_search(index, params, len(rows))
    progress(f"selectivity {fraction:g}: {len(rows):,} rows, {'exact scan' if plan.exact else plan.params}")
    truth = _exact_truth(vectors, probes, rows, k)
    filtered = _timed(lambda query: search_selected(index, vectors, query, k, params, rows)[0], probes)
    selected = np.zeros(index.ntotal, dtype=bool)
    selected[rows] = True
    post = _timed(lambda query: _post_filtered(index, vectors, query, k, params, selected), probes)
    expected = min(k, len(rows))
    return {"fraction": fraction, "selected": len(rows), "plan": "exact scan" if plan.exact else plan.params,
            "filtered": _quality(filtered, truth, rows, expected), "post_filter": _quality(post, truth, rows, expected)}


def _exact_truth(vectors: np.ndarray, probes: np.ndarray, rows: np.ndarray, k: int) -> list[np.ndarray]:
    selected = np.asarray(vectors[rows], dtype=np.float32)
    scores = probes @ selected.T
    return [rows[np.argsort(-row, kind="stable")[:k]] for row in scores]


def _post_filtered(index: faiss.Index, vectors: np.ndarray, query: np.ndarray, k: int, params: dict[str, int],
                   selected: np.ndarray) -> np.ndarray:
    """The unfiltered top POST_FILTER_DEPTH cut to the selection (`selected`: a mask over every row, built before
    the clock starts); a compressed index's survivors are then ranked by their exact cosines, as the service ranks
    its candidates."""
    _, found = index.search(query[None], min(POST_FILTER_DEPTH, index.ntotal))
    hits = found[0][found[0] >= 0]
    hits = hits[selected[hits]]
    return search_exactly(vectors, query, k, np.sort(hits))[0] if "k_factor" in params else hits[:k]


def _timed(search: Callable[[np.ndarray], np.ndarray], probes: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    answers, seconds = [], []
    for query in probes:
        started = time.perf_counter()
        answers.append(search(query))
        seconds.append(time.perf_counter() - started)
    return answers[WARMUP_QUERIES:], seconds[WARMUP_QUERIES:]


def _quality(measured: tuple[list[np.ndarray], list[float]], truth: list[np.ndarray], rows: np.ndarray,
             expected: int) -> dict:
    answers, seconds = measured
    truth = truth[WARMUP_QUERIES:]
    recall = [len(set(found) & set(best)) / len(best) for found, best in zip(answers, truth, strict=True)]
    return {"all_match": bool(all(np.isin(found, rows).all() for found in answers)),
            "recall_at_k": round(float(np.mean(recall)), 4),
            "short_fraction": round(float(np.mean([len(found) < expected for found in answers])), 4),
            **latency_summary(seconds)}
