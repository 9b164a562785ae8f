"""Which FAISS index a corpus gets, and building it: the size tiers, the factory check, the tuned search parameters."""

from __future__ import annotations

import logging
import math
import re

import faiss
import numpy as np

from clipspace.errors import InvalidBuildOptions

log = logging.getLogger(__name__)

# Both limits count stored floats, given as vectors of LIMIT_DIM dims: exact search reads every float per query
# (memory-bound: ~4 ms at 50k x 512-d here), and HNSW holds every float in RAM (docs/decisions.md).
EXACT_SEARCH_LIMIT = 50_000  # 50k at 512-d, 200k at 128-d
HNSW_LIMIT = 200_000  # beyond, IVF-PQ: HNSW would hold every vector in RAM (400 MB at 200k x 512-d)
LIMIT_DIM = 512
HNSW_EF_SEARCH = 128  # recall@10 0.999 on 100k clustered vectors, 0.32 ms (FAISS's default 16: 0.93)
IVF_PROBE_DIVISOR = 32  # nprobe = nlist / 32: 64 at 1M, recall@10 0.990 at 1.4 ms of CPU (docs/decisions.md)
RERANK_K_FACTOR = 20  # a compressed index proposes 20 x k candidates; their exact cosines pick the k answers
# Indexes whose scores are already exact inner products; any other (PQ, SQ, PCA...) is re-ranked.
EXACT_INDEXES = (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat, faiss.IndexRefine)
TRAIN_SAMPLE = 100_000  # k-means and PQ train on at most this many rows (seeded sample): minutes, not hours, at 1M


def choose_factory(index_type: str, count: int, dim: int) -> str:
    """`auto` picks by corpus size (thresholds measured on clustered embeddings, docs/decisions.md); anything else
    is a FAISS factory string used as given.

    Exact search below EXACT_SEARCH_LIMIT vectors of LIMIT_DIM dims (as many floats in any dim); HNSW up to
    HNSW_LIMIT such vectors; beyond, IVF with 4-bit fast-scan PQ codes
    (dim / 8 bytes per vector), whose candidates are re-ranked exactly from the stored vectors.
    """
    if index_type != "auto":
        return index_type
    if count * dim < EXACT_SEARCH_LIMIT * LIMIT_DIM:
        return "Flat"
    if count * dim < HNSW_LIMIT * LIMIT_DIM:
        return "HNSW32,Flat"
    nlist = 2 ** round(math.log2(2 * math.sqrt(count)))  # ~2 sqrt(N) lists: 2048 at 1M
    sub_vectors = dim // 4 if dim % 4 == 0 else dim  # 4 dimensions per 4-bit sub-quantizer
    return f"IVF{nlist},PQ{sub_vectors}x4fs"


def check_factory(index_type: str, dim: int) -> None:
    """Refuse an unknown FAISS factory string before a build spends an hour embedding."""
    if index_type == "auto":
        return
    try:
        faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise InvalidBuildOptions(f"FAISS cannot build index type {index_type!r}: {faiss_error_line(error)}") from error


def build_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product FAISS index over L2-normalised vectors, so scores are cosine similarities."""
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained and len(vectors):
            sample = _training_sample(vectors)
            log.info("training FAISS %s on %d of %d vectors", factory, len(sample), len(vectors))
            index.train(sample)
    except RuntimeError as error:  # e.g. IVF with fewer vectors than lists
        raise InvalidBuildOptions(f"FAISS index {factory!r} over {len(vectors)} vectors: "
                                  f"{faiss_error_line(error)}") from error
    if len(vectors):
        index.add(vectors)
    return index


def tuned_search_params(index: faiss.Index) -> dict[str, int]:
    """How to search `index`, by FAISS's own parameter names plus `k_factor` (candidates per answer re-ranked
    exactly from the stored vectors); recorded in the manifest at build time and applied to every query."""
    params = {}
    if isinstance(index, faiss.IndexHNSW):
        params["efSearch"] = HNSW_EF_SEARCH
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params["nprobe"] = max(1, ivf.nlist // IVF_PROBE_DIVISOR)
    if not isinstance(index, EXACT_INDEXES):
        params["k_factor"] = RERANK_K_FACTOR
    return params


def _training_sample(vectors: np.ndarray) -> np.ndarray:
    """At most TRAIN_SAMPLE rows, seeded, in file order: the same corpus always trains the same index."""
    if len(vectors) <= TRAIN_SAMPLE:
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), TRAIN_SAMPLE, replace=False))
    return np.ascontiguousarray(vectors[rows])


def faiss_error_line(error: Exception) -> str:
    """What a FAISS error says, without the C++ location before it and the stack after it."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0])
