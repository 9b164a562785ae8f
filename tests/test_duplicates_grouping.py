"""Grouping duplicates from vectors (clipspace.index.duplicates): the star-shaped rule, content hashes, a reindex's
incremental placing, and collapsing a ranked list."""

from __future__ import annotations

import numpy as np

from clipspace.index import duplicates
from clipspace.index.duplicates import DuplicateGroups, collapse, group_items


def unit(*rows: list[float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chain(angles_deg: list[float]) -> np.ndarray:
    """Unit vectors in a plane at the given angles (cosine between two = cos of their angle apart)."""
    radians = np.radians(angles_deg)
    return unit(*[[np.cos(a), np.sin(a), 0.0] for a in radians])


def test_a_chain_of_look_alikes_is_not_joined_through_its_middle():
    # 0-1 and 1-2 are 10 degrees apart (cosine 0.985), 0-2 20 degrees (0.94): single-link would join all three
    groups = group_items(np.arange(3), ["a", "b", "c"], chain([0, 10, 20]), threshold=0.98)
    assert groups == {0: 0, 1: 0}


def test_each_item_joins_the_most_similar_representative():
    groups = group_items(np.array([10, 11, 12]), ["a", "b", "c"], chain([0, 30, 27]), threshold=0.98)
    assert groups == {11: 11, 12: 11}


def test_the_same_content_hash_is_one_group_whatever_the_vectors():
    groups = group_items(np.arange(3), ["same", "other", "same"], chain([0, 90, 180]))
    assert groups == {0: 0, 2: 0}


def test_a_group_of_one_is_no_group():
    assert group_items(np.arange(3), ["a", "b", "c"], chain([0, 60, 120])) == {}


def test_a_reindex_places_a_new_copy_into_its_existing_group_and_keeps_the_others():
    previous = DuplicateGroups.from_pairs({5: 5, 7: 5}.items())
    ids = np.array([5, 6, 7, 9])  # 9 is new: a copy of 6, which was alone
    vectors = chain([0, 60, 0.5, 60.5])
    kept = np.array([True, True, True, False])
    assert group_items(ids, list("abcd"), vectors, previous=previous, kept=kept) == {5: 5, 7: 5, 6: 6, 9: 6}


def test_a_kept_group_is_not_searched_again():
    previous = DuplicateGroups.from_pairs({5: 5, 7: 5}.items())
    far_apart = chain([0, 90])  # the kept grouping stands though the vectors would no longer group them
    assert group_items(np.array([5, 7]), ["a", "b"], far_apart, previous=previous,
                       kept=np.array([True, True])) == {5: 5, 7: 5}


def test_deleting_a_representative_regroups_its_remaining_members():
    previous = DuplicateGroups.from_pairs({1: 1, 2: 1, 3: 1}.items())
    groups = group_items(np.array([2, 3]), ["b", "c"], chain([0, 0.5]), previous=previous,
                         kept=np.array([True, True]))
    assert groups == {2: 2, 3: 2}


def test_deleting_one_of_a_pair_leaves_no_group():
    previous = DuplicateGroups.from_pairs({1: 1, 2: 1}.items())
    assert group_items(np.array([1]), ["a"], chain([0]), previous=previous, kept=np.array([True])) == {}


def test_collapse_keeps_the_best_ranked_member_and_lists_the_others_representative_first():
    groups = DuplicateGroups.from_pairs({4: 4, 2: 4, 9: 4, 5: 5, 6: 5}.items())
    ranked = [9, 1, 4, 6, 3, 5]
    assert collapse(ranked, int, groups) == [(9, (4, 2)), (1, ()), (6, (5,)), (3, ())]


def test_groups_page_largest_first():
    groups = DuplicateGroups.from_pairs({1: 1, 2: 1, 3: 3, 4: 3, 8: 3}.items())
    assert groups.largest_first == [(3, 4, 8), (1, 2)]


def test_a_large_corpus_searched_through_an_ivf_finds_the_same_groups_as_an_exact_scan(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors[2800:] = vectors[:200] + 0.05 * rng.standard_normal((200, 64)).astype(np.float32)  # near copies
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids, hashes = np.arange(3000), [str(row) for row in range(3000)]
    exact = group_items(ids, hashes, vectors)
    monkeypatch.setattr(duplicates, "EXACT_ROWS", 1000)
    assert group_items(ids, hashes, vectors) == exact
    assert exact == {**{row: row for row in range(200)}, **{2800 + row: row for row in range(200)}}
