"""Top-k search restricted to a selection of rows, run inside the ANN search rather than as a cut after its top k.

A cut after the top k fails exactly where a filter matters: a filter that keeps 0.1% of the corpus finds on
average one of its items in an unfiltered top 1,000. So a search either scans the selected vectors exactly or
hands FAISS an `IDSelector`, and a planner picks one, as Qdrant's does (its `full_scan_threshold`):

- a small selection (at most EXACT_SCAN_FLOATS stored floats) is scanned exactly: its cost is known and bounded,
  while an ANN search with a selector has to look at ~1/selectivity items to find each selected one;
- a larger one searches the index with a bitmap selector and a search breadth (efSearch, nprobe, and for a
  compressed index its candidates per answer) raised by selectivity ** -BREADTH_EXPONENT, then re-ranks a
  compressed index's candidates exactly, as an unfiltered search does (`search_index`). Flat, HNSW
  and IVF (the 4-bit fast-scan PQ of the largest tier included, in FAISS 1.15) apply the selector while they
  rank, so all their k x k_factor candidates are selected ones (tests/test_filtered.py holds each kind to that);
- if the index still answers fewer than min(k, selected) rows, the selection is scanned exactly: k results come
  back whenever k selected items exist.

Rows are row numbers in the index and in `vectors` alike (the stored vectors of an index version, e.g. a
`clipspace.index.shards.ShardedVectors`); `rows` is sorted, unique, int64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import faiss
import numpy as np

from clipspace.index.shards import ShardedVectors

# 16,384 vectors of 512 dims: the largest exact scan is about half the 10 ms goal. The scan reads each selected
# vector where it lies (no gather copy; gathering first took twice as long): 16,384 random rows took 5.1 ms (p50) of
# 200k and 6.3 ms of 1M, against 0.7 / 1.0 ms for the unfiltered HNSW / IVF-PQ search, one thread on the shared
# 2-core machine (benchmarks/filtered.py). The exact scan's cost is certain; the index's grows with the breadth
# below. So 1% of 1M (10k rows, 3.4 ms) and 0.1% are scanned, 10% of 200k and of 1M go to the index (2.6 / 3.0 ms).
EXACT_SCAN_FLOATS = 1 << 23
# The filtered top k sit at rank ~k / selectivity of the unfiltered ranking, so the search must look wider and, on a
# compressed index, keep more candidates: their compressed scores separate them less well there. Measured, recall@10
# against exact filtered search: HNSW32 on 50k clustered 512-d vectors at 10% / 1%, efSearch 128: 0.97 / 0.41,
# scaled to 405 / 1280: 0.99 / 0.96; IVF2048 fast-scan PQ on 1M at 10% / 3% with nprobe 64 and k_factor 20: 0.957 /
# 0.927, nprobe scaled only: 0.969 / 0.967, nprobe and k_factor scaled: 0.993 / 0.994 (2.5 / 4.6 ms).
BREADTH_EXPONENT = 0.5
EXACT_CHUNK_ROWS = 8_192  # rows gathered at a time from vectors that are not plain float32 arrays (16 MiB at 512-d)


@dataclass(frozen=True)
class Plan:
    """How one filtered search runs: `exact` scans the selection; otherwise the index is searched with `params`
    (FAISS's names, plus `k_factor`), with a selector unless the whole index is selected (`selective` False: the
    unfiltered search, unchanged)."""

    exact: bool
    params: dict[str, int] = field(default_factory=dict)
    selective: bool = True


def plan_search(index: faiss.Index, params: dict[str, int], selected: int) -> Plan:
    """The planner: exact scan for a small selection or an index type without selector support, else the index
    with its tuned breadth scaled up by how sparse the selection is."""
    total = index.ntotal
    if selected >= total:  # everything: exactly the unfiltered search, no selector
        return Plan(exact=False, params=dict(params), selective=False)
    if selected * index.d <= EXACT_SCAN_FLOATS or not isinstance(index, faiss.IndexFlat | faiss.IndexHNSW |
                                                                  faiss.IndexIVF):
        return Plan(exact=True)
    breadth = (selected / total) ** -BREADTH_EXPONENT
    scaled = dict(params)
    if isinstance(index, faiss.IndexHNSW):
        scaled["efSearch"] = math.ceil(params.get("efSearch", index.hnsw.efSearch) * breadth)
    if isinstance(index, faiss.IndexIVF):
        scaled["nprobe"] = min(index.nlist, math.ceil(params.get("nprobe", index.nprobe) * breadth))
    if "k_factor" in params:
        scaled["k_factor"] = math.ceil(params["k_factor"] * breadth)
    return Plan(exact=False, params=scaled)


def search_selected(index: faiss.Index, vectors: np.ndarray | ShardedVectors, query: np.ndarray, k: int,
                    params: dict[str, int], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `rows` with the highest inner product with `query`, best first, and their scores.

    `params` are the index's tuned search parameters (`clipspace.index.choose.tuned_search_params`). Fewer than k rows
    come back only when fewer than k are selected; an empty selection answers empty arrays.
    """
    rows = np.asarray(rows, dtype=np.int64)
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    if k < 1 or len(rows) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if rows[0] < 0 or rows[-1] >= index.ntotal:
        raise IndexError(f"selected rows must lie in 0..{index.ntotal - 1}")
    plan = plan_search(index, params, len(rows))
    if not plan.exact:
        found, scores = search_index(index, vectors, query, k, plan.params, rows if plan.selective else None)
        if len(found) >= min(k, len(rows)):
            return found, scores
    return search_exactly(vectors, query, k, rows)


def search_exactly(vectors: np.ndarray | ShardedVectors, query: np.ndarray, k: int,
                   rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k of the sorted `rows` by inner product, best first (ties: the lower row first); also the
    re-rank of a compressed index's candidates."""
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    scores = _selected_scores(vectors, query, rows)
    best = np.argpartition(-scores, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
    best = best[np.lexsort((rows[best], -scores[best]))]
    return rows[best], scores[best]


def search_index(index: faiss.Index, vectors: np.ndarray | ShardedVectors, query: np.ndarray, k: int,
                 params: dict[str, int], rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The index's answer among `rows` (None: every row, no selector), its candidates re-ranked exactly when the
    index compresses its vectors (`k_factor` in params)."""
    k_factor = params.get("k_factor", 1)
    # FAISS keeps a raw pointer to the selector and the selector one to the bitmap: both live until search returns.
    bitmap = None if rows is None else _bitmap(rows, index.ntotal)
    selector = None if rows is None else faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bitmap))
    search_params = _faiss_search_params(index, params, selector)
    scores, found = index.search(query[None], min(k * k_factor, index.ntotal), params=search_params)
    found, scores = found[0], scores[0]
    keep = found >= 0
    found, scores = found[keep], scores[keep]
    if k_factor > 1:
        return search_exactly(vectors, query, k, np.unique(found))
    return found[:k], scores[:k]


def _faiss_search_params(index: faiss.Index, params: dict[str, int],
                         selector: faiss.IDSelector | None) -> faiss.SearchParameters:
    """`params` (FAISS's own names) as the SearchParameters object of the index's type, with `selector`."""
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=params.get("efSearch", index.hnsw.efSearch))
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=params.get("nprobe", index.nprobe))
    return faiss.SearchParameters(sel=selector)


def _bitmap(rows: np.ndarray, total: int) -> np.ndarray:
    """FAISS's IDSelectorBitmap layout (bit i % 8 of byte i // 8). Built in ~0.2 ms for 100k of 1M rows, where an
    IDSelectorBatch hashes every row (11.6 ms) and searches no faster."""
    mask = np.zeros(total, dtype=bool)
    mask[rows] = True
    return np.packbits(mask, bitorder="little")


def _selected_scores(vectors: np.ndarray | ShardedVectors, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inner products of `query` with the sorted `rows`. Float32 storage is read where it lies, row by row, by
    FAISS in one pass (half the time of gathering the rows first, and no copy); anything else is gathered
    EXACT_CHUNK_ROWS rows at a time."""
    scores = np.empty(len(rows), np.float32)
    pieces = _float32_pieces(vectors)
    if pieces is None:
        for lo in range(0, len(rows), EXACT_CHUNK_ROWS):
            chunk = _contiguous(vectors[rows[lo:lo + EXACT_CHUNK_ROWS]])
            _inner_products(scores[lo:lo + len(chunk)], query, chunk, np.arange(len(chunk), dtype=np.int64))
        return scores
    for start, piece in pieces:
        lo, hi = np.searchsorted(rows, [start, start + len(piece)])
        if hi > lo:
            _inner_products(scores[lo:hi], query, piece, np.ascontiguousarray(rows[lo:hi] - start))
    return scores


def _inner_products(out: np.ndarray, query: np.ndarray, vectors: np.ndarray, positions: np.ndarray) -> None:
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(vectors),
                                     faiss.swig_ptr(positions), len(query), 1, len(positions))


def _float32_pieces(vectors: np.ndarray | ShardedVectors) -> list[tuple[int, np.ndarray]] | None:
    """(first row, C-contiguous float32 rows) covering `vectors` without a copy: a version's shards as they are
    mapped, a float32 array as it is; None for anything else."""
    if isinstance(vectors, ShardedVectors) and vectors.dtype == np.float32:
        return [(int(vectors.starts[number]), _contiguous(vectors.shard(number)))
                for number in range(len(vectors.shards))]
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.flags.c_contiguous:
        return [(0, vectors)]
    return None


def _contiguous(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)
