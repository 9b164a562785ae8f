"""Filtered search (clipspace.index.filtered) on small real FAISS indexes of each tier, over clustered vectors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from benchmarks.clustered import ClusteredSpec
from clipspace.index import filtered
from clipspace.index.choose import build_faiss, tuned_search_params
from clipspace.index.filtered import plan_search, search_exactly, search_selected
from clipspace.index.shards import ShardedVectors, ShardWriter

COUNT, DIM, K = 20_000, 64, 10
# The tiers' factory strings as `choose_factory` writes them, at a size where every tier builds in seconds.
FACTORIES = {"flat": "Flat", "hnsw": "HNSW32,Flat", "ivfpq": f"IVF256,PQ{DIM // 4}x4fs"}
SELECTIVITIES = (0.1, 0.01, 0.001)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rows = ClusteredSpec(centres=COUNT // 50).generate(COUNT + 50, DIM)
    return rows[:COUNT], rows[COUNT:]


@pytest.fixture(scope="module")
def indexes(data) -> dict[str, faiss.Index]:
    return {kind: build_faiss(data[0], factory) for kind, factory in FACTORIES.items()}


@pytest.fixture
def through_the_index(monkeypatch):
    """Every non-empty selection searched through the index with a selector, however small it is."""
    monkeypatch.setattr(filtered, "EXACT_SCAN_FLOATS", 0)


def selection(fraction: float, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(COUNT, round(COUNT * fraction), replace=False))


def exact_filtered(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int = K) -> np.ndarray:
    scores = vectors[rows] @ query
    return rows[np.argsort(-scores, kind="stable")[:k]]


def answer(index: faiss.Index, vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int = K):
    return search_selected(index, vectors, query, k, tuned_search_params(index), rows)


@pytest.mark.parametrize("fraction", SELECTIVITIES)
@pytest.mark.parametrize("kind", FACTORIES)
def test_every_answer_lies_in_the_selection(data, indexes, through_the_index, kind, fraction):
    vectors, queries = data
    rows = selection(fraction)
    for query in queries:
        found, _ = answer(indexes[kind], vectors, query, rows)
        assert np.isin(found, rows).all()


@pytest.mark.parametrize("fraction", SELECTIVITIES)
@pytest.mark.parametrize("kind", FACTORIES)
def test_recall_at_10_against_exact_filtered_search_is_at_least_0_95(data, indexes, through_the_index, kind,
                                                                      fraction):
    vectors, queries = data
    rows = selection(fraction)
    recalls = [len(set(answer(indexes[kind], vectors, query, rows)[0]) & set(exact_filtered(vectors, query, rows)))
               / K for query in queries]
    assert np.mean(recalls) >= 0.95


@pytest.mark.parametrize("kind", FACTORIES)
def test_a_selection_smaller_than_k_returns_all_of_it_best_first(data, indexes, through_the_index, kind):
    vectors, queries = data
    rows = selection(4 / COUNT)
    found, scores = answer(indexes[kind], vectors, queries[0], rows)
    assert sorted(found) == list(rows)
    assert list(found) == list(exact_filtered(vectors, queries[0], rows))
    assert (np.diff(scores) <= 0).all()


@pytest.mark.parametrize("kind", FACTORIES)
def test_k_selected_items_far_from_the_query_still_give_k_results(data, indexes, through_the_index, kind):
    vectors, queries = data
    farthest = np.sort(np.argsort(vectors @ queries[0])[:K])  # none of them near any probed list or graph path
    found, _ = answer(indexes[kind], vectors, queries[0], farthest)
    assert sorted(found) == list(farthest)


@pytest.mark.parametrize("kind", FACTORIES)
def test_an_empty_selection_answers_nothing(data, indexes, kind):
    found, scores = answer(indexes[kind], data[0], data[1][0], np.empty(0, np.int64))
    assert len(found) == len(scores) == 0


@pytest.mark.parametrize("kind", FACTORIES)
def test_selecting_everything_answers_what_the_unfiltered_search_answers(data, indexes, kind):
    vectors, queries = data
    index, params = indexes[kind], tuned_search_params(indexes[kind])
    faiss.ParameterSpace().set_index_parameters(index, ",".join(f"{name}={value}" for name, value in params.items()
                                                               if name != "k_factor"))
    for query in queries[:10]:
        _, rows = index.search(query[None], K * params.get("k_factor", 1))
        if "k_factor" in params:
            rows, _ = search_exactly(vectors, query, K, np.unique(rows[0][rows[0] >= 0]))
        found, _ = search_selected(index, vectors, query, K, params, np.arange(COUNT))
        assert list(found) == list(np.ravel(rows)[:K])


def test_a_small_selection_is_scanned_exactly_and_a_large_one_searched_with_a_wider_breadth(indexes, monkeypatch):
    monkeypatch.setattr(filtered, "EXACT_SCAN_FLOATS", 1_000 * DIM)
    hnsw, ivf = indexes["hnsw"], indexes["ivfpq"]
    small = 1_000
    assert plan_search(hnsw, {"efSearch": 128}, small).exact
    assert plan_search(hnsw, {"efSearch": 128}, small + 1).params["efSearch"] > 128
    wider = plan_search(ivf, {"nprobe": 8, "k_factor": 20}, COUNT // 10).params
    assert wider["nprobe"] > 8 and wider["k_factor"] > 20
    assert plan_search(ivf, {"nprobe": 8, "k_factor": 20}, COUNT).params == {"nprobe": 8, "k_factor": 20}


def test_a_sparse_selection_never_probes_more_lists_than_the_index_has(indexes, through_the_index):
    assert plan_search(indexes["ivfpq"], {"nprobe": 8}, 1).params["nprobe"] == indexes["ivfpq"].nlist


def test_the_exact_scan_reads_shards_arrays_and_other_array_likes_alike(data, tmp_path):
    vectors, queries = data
    writer = ShardWriter(tmp_path, "image", DIM, None, shard_rows=3_000)
    writer.add(vectors)
    shards = ShardedVectors(tmp_path, writer.close(), DIM)
    rows = selection(0.05)
    expected = exact_filtered(vectors, queries[0], rows)
    for stored in (vectors, shards, np.asfortranarray(vectors), vectors.astype(np.float16).astype(np.float32)):
        assert list(search_exactly(stored, queries[0], K, rows)[0]) == list(expected)
