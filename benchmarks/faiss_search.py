"""FAISS search cost at corpus sizes beyond the benchmark corpus: exact (Flat) against HNSW, and what HNSW misses.

Vectors are random unit vectors of the model's dimension. Uniform data on the sphere is the hardest case for a
graph index (no clusters to follow), so the HNSW recall here is a floor for real CLIP embeddings.
Each index is written as a real index version and searched through `IndexVersion.search`, the call the
service makes (FAISS plus the metadata lookup); the bare FAISS call is timed beside it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from benchmarks.report import progress
from benchmarks.timing import latency_summary, time_calls
from clipspace.identity import ModelIdentity
from clipspace.index.records import ItemRecord
from clipspace.index.version import IndexVersion
from clipspace.index.writer import write_version

FACTORIES = ("Flat", "HNSW32,Flat")
WARMUP_QUERIES = 20


@dataclass(frozen=True)
class FaissResult:
    size: int
    factory: str
    write_seconds: float  # build + write + verify a version, as the builder does
    index_version_search: dict[str, float]
    raw_faiss_search: dict[str, float]
    recall_at_k: float  # against Flat on the same queries; 1.0 for Flat itself


def measure_faiss(sizes: list[int], dim: int, queries: int, k: int, work_dir: Path,
                  seed: int = 0) -> list[FaissResult]:
    """Every factory at every size, on the same vectors and queries, so recall compares like with like."""
    rng = np.random.default_rng(seed)
    results = []
    for size in sizes:
        vectors = _unit_vectors(rng, size, dim)
        probes = _unit_vectors(rng, queries + WARMUP_QUERIES, dim)
        exact: list[set[int]] = []
        for factory in FACTORIES:
            progress(f"FAISS {factory} at {size:,} vectors of dim {dim}")
            result, found = _measure_one(vectors, probes, factory, k, work_dir)
            exact = exact or found  # FACTORIES starts with Flat: its hits are the ground truth
            recall = np.mean([len(hits & truth) / len(truth) for hits, truth in zip(found, exact, strict=True)])
            results.append(replace(result, recall_at_k=round(float(recall), 4)))
    return results


def _measure_one(vectors: np.ndarray, probes: np.ndarray, factory: str, k: int,
                 work_dir: Path) -> tuple[FaissResult, list[set[int]]]:
    """Write one version with `factory`, then time its searches; also answers the ids found per query."""
    items = [ItemRecord(row, f"synthetic/{row:08d}.jpg", "", 0, 0, 0, 0, None) for row in range(len(vectors))]
    index_dir = Path(tempfile.mkdtemp(prefix="faiss-", dir=work_dir))
    try:
        started = time.perf_counter()
        staging = write_version(index_dir, items, vectors, np.zeros((0, vectors.shape[1]), np.float32),
                                model=synthetic_model(vectors.shape[1]), factory=factory, corpus_root=index_dir,
                                report={})
        write_seconds = time.perf_counter() - started
        timed = len(probes) - WARMUP_QUERIES
        version = IndexVersion(staging)
        try:
            found = [{hit.id for hit in version.search(probe, k)} for probe in probes[WARMUP_QUERIES:]]
            searched = time_calls(lambda i: version.search(probes[i], k), timed, WARMUP_QUERIES)
        finally:
            version.close()
        raw = faiss.read_index(str(staging / "image.faiss"))
        if isinstance(raw, faiss.IndexHNSW):  # the service's own search parameters, so both columns do the same work
            raw.hnsw.efSearch = version.search_params()["efSearch"]
        raw_searched = time_calls(lambda i: raw.search(probes[i:i + 1], k), timed, WARMUP_QUERIES)
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    result = FaissResult(len(vectors), factory, round(write_seconds, 3), latency_summary(searched),
                         latency_summary(raw_searched), recall_at_k=1.0)
    return result, found


def synthetic_model(dim: int) -> ModelIdentity:
    """No model embedded these random vectors; the manifest still needs a (never loaded) identity."""
    return ModelIdentity(model="synthetic", precision="fp32", fingerprint="synthetic", dim=dim, image_size=0,
                         preprocess={})


def _unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
