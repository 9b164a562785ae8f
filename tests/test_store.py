"""Index versions on disk: atomic publishing, verification against the manifest, search semantics."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clustered import ClusteredSpec
from clipspace.errors import IndexBusy, IndexCorrupt, IndexNotReady
from clipspace.identity import ModelIdentity
from clipspace.index import choose
from clipspace.index import version as index_version
from clipspace.index.choose import choose_factory
from clipspace.index.publish import build_lock, current_version_name, open_current, publish_version
from clipspace.index.records import ItemRecord
from clipspace.index.writer import VersionWriter, write_version

MODEL = ModelIdentity(model="test", precision="fp32", fingerprint="blake2b:test", dim=16, image_size=32,
                      preprocess={"size": 32})


def unit_rows(count: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def records(count: int, captioned: int = 0) -> list[ItemRecord]:
    return [ItemRecord(100 + i, f"img/{i}.png", f"{i:064x}", 10, 0, 4, 4, f"caption {i}" if i < captioned else None)
            for i in range(count)]


def publish(index_dir, count=20, factory="Flat", captioned=0, keep=3, seed=0):
    staging = write_version(index_dir, records(count, captioned), unit_rows(count, seed=seed),
                            unit_rows(captioned, seed=seed + 1), model=MODEL, factory=factory,
                            corpus_root=index_dir, report={})
    return publish_version(index_dir, staging, keep=keep)


def test_no_published_version_is_index_not_ready(tmp_path):
    with pytest.raises(IndexNotReady, match="index_builder"):
        open_current(tmp_path)


def test_search_returns_sorted_scores_ids_and_at_most_k(tmp_path):
    publish(tmp_path, count=20)
    version = open_current(tmp_path)
    query = unit_rows(20)[7]
    hits = version.search(query, k=5)
    assert next(hit.id for hit in hits) == 107 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(version.search(query, k=1000)) == 20


def test_caption_search_answers_the_captioned_items(tmp_path):
    publish(tmp_path, count=10, captioned=4)
    version = open_current(tmp_path)
    hits = version.search(unit_rows(4, seed=1)[2], k=10, target="text")
    assert len(hits) == 4 and hits[0].id == 102 and hits[0].caption == "caption 2"


def test_hnsw_factory_returns_the_exact_top_hit(tmp_path):
    publish(tmp_path, count=500, factory="HNSW32,Flat")
    version = open_current(tmp_path)
    assert version.index_type() == "IndexHNSWFlat"
    assert version.search(unit_rows(500)[321], k=10)[0].id == 421
    assert len(version.search(unit_rows(500)[0], k=300)) == 300


def test_only_a_small_exact_index_counts_as_quick_to_search(tmp_path, monkeypatch):
    publish(tmp_path / "flat", count=20)
    publish(tmp_path / "hnsw", count=500, factory="HNSW32,Flat")
    assert open_current(tmp_path / "flat").quick_to_search("image")
    assert not open_current(tmp_path / "flat").quick_to_search("text")  # no captions, no caption index
    assert not open_current(tmp_path / "hnsw").quick_to_search("image")
    monkeypatch.setattr(index_version, "QUICK_SEARCH_FLOATS", 19 * open_current(tmp_path / "flat").dim)
    assert not open_current(tmp_path / "flat").quick_to_search("image")


@pytest.mark.parametrize("target", ["image", "text"])
def test_a_small_version_answers_from_memory_exactly_what_its_sqlite_answers(tmp_path, monkeypatch, target):
    publish(tmp_path, count=30, captioned=12)
    query = unit_rows(12, seed=1)[5] if target == "text" else unit_rows(30)[7]
    held = open_current(tmp_path).search(query, k=10, target=target)
    monkeypatch.setattr(index_version, "HELD_RECORDS_FLOATS", 0)  # too big to hold: every lookup goes to meta.sqlite
    assert open_current(tmp_path).search(query, k=10, target=target) == held
    assert len(held) == 10


def test_meta_sqlite_damaged_under_an_open_version_fails_only_the_lookups_that_read_it(tmp_path, monkeypatch):
    publish(tmp_path / "small", count=20)
    publish(tmp_path / "large", count=20)
    small = open_current(tmp_path / "small")
    monkeypatch.setattr(index_version, "HELD_RECORDS_FLOATS", 0)
    large = open_current(tmp_path / "large")
    for version in (small, large):
        meta = version.path / "meta.sqlite"
        meta.write_bytes(b"\x5a" * meta.stat().st_size)  # in place, as a failing disk would
    assert small.search(unit_rows(20)[3], k=5)[0].id == 103  # its records were read when it opened
    for lookup in (lambda: large.search(unit_rows(20)[3], k=5), lambda: small.item(103),
                   lambda: small.image_vector(103), small.items):
        with pytest.raises(IndexCorrupt, match=r"meta\.sqlite"):
            lookup()


def test_an_open_version_reads_its_stored_vectors_after_its_folder_is_deleted(tmp_path):
    publish(tmp_path, count=20)
    version = open_current(tmp_path)
    shutil.rmtree(version.path)  # pruned under a service that still serves it
    np.testing.assert_array_equal(version.image_vector(103), unit_rows(20)[3])


def test_publishing_switches_current_and_keeps_only_recent_versions(tmp_path):
    names = [publish(tmp_path, count=5 + n, keep=2) for n in range(4)]
    assert names == ["0001", "0002", "0003", "0004"]
    assert current_version_name(tmp_path) == "0004"
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["0003", "0004"]
    assert open_current(tmp_path).count == 8


def test_a_damaged_file_is_refused_on_open(tmp_path):
    publish(tmp_path, count=5)
    meta = tmp_path / "versions" / "0001" / "meta.sqlite"
    meta.write_bytes(meta.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IndexCorrupt, match=r"meta\.sqlite"):
        open_current(tmp_path)


def test_a_staging_folder_never_becomes_current_and_the_next_build_removes_it(tmp_path):
    publish(tmp_path, count=5)
    write_version(tmp_path, records(3), unit_rows(3), unit_rows(0), model=MODEL, factory="Flat",
                  corpus_root=tmp_path, report={})  # a build that died before publishing
    assert open_current(tmp_path).count == 5
    with build_lock(tmp_path):
        assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".staging")]


def test_two_builds_cannot_hold_the_lock_at_once(tmp_path):
    with build_lock(tmp_path), pytest.raises(IndexBusy), build_lock(tmp_path):
        pass


def test_the_same_model_rule_names_every_field_that_differs():
    other = MODEL.model_copy(update={"fingerprint": "blake2b:other", "precision": "bf16"})
    assert MODEL.differences(other) == ["fingerprint", "precision"]


def test_a_model_found_at_another_path_is_still_the_same_model():
    moved = MODEL.model_copy(update={"model": "local-dir:/elsewhere", "pretrained": "/elsewhere/weights.pt"})
    assert MODEL.same_model(moved)


def test_a_manifest_of_an_unknown_format_is_refused_with_what_to_do(tmp_path):
    publish(tmp_path, count=5)
    manifest = tmp_path / "versions" / "0001" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(IndexCorrupt, match=r"format 99 .*rebuild the index"):
        open_current(tmp_path)


FORMAT_1_INDEX = Path(__file__).parent / "assets" / "format1-index"  # written by clipspace at format 1


def test_an_index_of_format_1_still_opens_and_searches(tmp_path):
    shutil.copytree(FORMAT_1_INDEX, tmp_path / "old")
    version = open_current(tmp_path / "old")
    stored = version.image_vectors()
    assert version.manifest.format_version == 1
    assert version.search(stored[2], k=1)[0].id == 2
    assert version.search(version.caption_vectors()[0], k=1, target="text")[0].caption == "a caption"


def write_with_small_shards(index_dir, vectors, previous=None, reuse=0):
    """A version whose first `reuse` rows are the previous version's, the rest fresh, in shards of 4 rows."""
    writer = VersionWriter(index_dir, vectors.shape[1], previous, shard_rows=4)
    for row in range(len(vectors)):
        writer.add(records(len(vectors))[row], row if row < reuse else vectors[row])
    return publish_version(index_dir, writer.finish(model=MODEL, factory="Flat", corpus_root=index_dir, report={}))


def test_a_new_version_links_the_unchanged_shards_of_the_previous_one_instead_of_copying(tmp_path):
    vectors = unit_rows(13)
    write_with_small_shards(tmp_path, vectors[:10])  # shards of 4, 4 and 2 rows
    before = open_current(tmp_path)
    write_with_small_shards(tmp_path, vectors, previous=before, reuse=10)  # 3 rows added
    after = open_current(tmp_path)
    old, new = before.manifest.image_shards, after.manifest.image_shards
    assert [shard.rows for shard in new] == [4, 4, 2, 3]
    assert new[:3] == old
    for shard in old:
        assert (after.path / shard.file).stat().st_ino == (before.path / shard.file).stat().st_ino
    np.testing.assert_array_equal(np.asarray(after.image_vectors()), vectors)


def test_a_shard_with_a_changed_row_is_written_anew(tmp_path):
    vectors = unit_rows(8)
    write_with_small_shards(tmp_path, vectors)
    before = open_current(tmp_path)
    changed = vectors.copy()
    changed[5] = unit_rows(1, seed=9)[0]
    writer = VersionWriter(tmp_path, 16, before, shard_rows=4)
    for row, record in enumerate(records(8)):
        writer.add(record, changed[row] if row == 5 else row)
    publish_version(tmp_path, writer.finish(model=MODEL, factory="Flat", corpus_root=tmp_path, report={}))
    after = open_current(tmp_path)
    assert after.manifest.image_shards[0] == before.manifest.image_shards[0]
    assert after.manifest.image_shards[1] != before.manifest.image_shards[1]
    np.testing.assert_array_equal(np.asarray(after.image_vectors()), changed)


def publish_vectors(index_dir, vectors: np.ndarray, factory: str) -> None:
    staging = write_version(index_dir, records(len(vectors)), vectors, unit_rows(0, dim=vectors.shape[1]),
                            model=MODEL, factory=factory, corpus_root=index_dir, report={})
    publish_version(index_dir, staging)


def clustered_with_queries(count: int, queries: int, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    vectors = ClusteredSpec(centres=count // 50).generate(count + queries, dim)
    return vectors[:count], vectors[count:]


def test_auto_is_exact_search_below_the_exact_search_limit():
    assert choose_factory("auto", choose.EXACT_SEARCH_LIMIT - 1, 512) == "Flat"


def test_the_limits_count_floats_so_smaller_vectors_stay_in_a_tier_longer():
    assert choose_factory("auto", 4 * choose.EXACT_SEARCH_LIMIT - 1, 128) == "Flat"
    assert choose_factory("auto", 4 * choose.EXACT_SEARCH_LIMIT, 128) == "HNSW32,Flat"
    assert choose_factory("auto", 4 * choose.HNSW_LIMIT - 1, 128) == "HNSW32,Flat"
    assert choose_factory("auto", 4 * choose.HNSW_LIMIT, 128).startswith("IVF")


def test_auto_is_hnsw_from_the_exact_search_limit_up_to_the_hnsw_limit():
    assert choose_factory("auto", choose.EXACT_SEARCH_LIMIT, 512) == "HNSW32,Flat"
    assert choose_factory("auto", choose.HNSW_LIMIT - 1, 512) == "HNSW32,Flat"


def test_auto_is_ivf_with_fast_scan_pq_from_the_hnsw_limit():
    assert choose_factory("auto", 1_000_000, 512) == "IVF2048,PQ128x4fs"


def test_an_explicit_factory_string_is_used_as_given():
    assert choose_factory("IVF64,SQ8", 10, 512) == "IVF64,SQ8"


def test_hnsw_records_its_tuned_ef_search_in_the_manifest(tmp_path):
    publish(tmp_path, count=500, factory="HNSW32,Flat")
    version = open_current(tmp_path)
    assert version.manifest.search_params["image"] == {"efSearch": choose.HNSW_EF_SEARCH}


def test_ivf_pq_records_nprobe_and_rerank_factor_in_the_manifest(tmp_path):
    publish_vectors(tmp_path, clustered_with_queries(2000, 0)[0], "IVF32,PQ16x4fs")
    assert open_current(tmp_path).search_params() == {"nprobe": 32 // choose.IVF_PROBE_DIVISOR,
                                                      "k_factor": choose.RERANK_K_FACTOR}


def test_a_compressed_index_answers_the_exact_cosines_of_the_stored_vectors(tmp_path):
    vectors, queries = clustered_with_queries(2000, 1)
    publish_vectors(tmp_path, vectors, "IVF32,PQ16x4fs")
    hits = open_current(tmp_path).search(queries[0], k=10)
    assert len(hits) == 10
    assert [hit.score for hit in hits] == pytest.approx([float(vectors[hit.id - 100] @ queries[0]) for hit in hits],
                                                        abs=1e-6)


def test_auto_beyond_the_hnsw_limit_finds_the_true_neighbours_of_clustered_vectors(tmp_path, monkeypatch):
    monkeypatch.setattr(choose, "EXACT_SEARCH_LIMIT", 50)  # vectors of 512 dims: 400 and 800 of these 64-d ones
    monkeypatch.setattr(choose, "HNSW_LIMIT", 100)
    vectors, queries = clustered_with_queries(5000, 50)
    factory = choose_factory("auto", len(vectors), vectors.shape[1])
    assert factory.startswith("IVF")
    publish_vectors(tmp_path, vectors, factory)
    version = open_current(tmp_path)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 100
    found = [{hit.id for hit in version.search(query, k=10)} for query in queries]
    recall = np.mean([len(hits & set(expected)) / 10 for hits, expected in zip(found, truth, strict=True)])
    assert recall >= 0.95
