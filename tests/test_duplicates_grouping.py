"""Grouping duplicates from vectors (clipspace.index.duplicates): the star-shaped rule, content hashes, a reindex's
incremental placing, the colour layout that confirms a pair (clipspace.index.layout), and collapsing a ranked
list."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image, ImageEnhance

from clipspace.align.world import render_scene, sample_scene
from clipspace.images import load_image
from clipspace.index import duplicates, layout
from clipspace.index.duplicates import DuplicateGroups, collapse, group_items
from clipspace.index.layout import colour_layout


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


def layout_of(image: Image.Image, **save) -> str:
    """The layout of `image` as the builder computes it: saved as a JPEG, decoded upright by load_image."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=save.pop("quality", 90), **save)
    return colour_layout(load_image(buffer.getvalue()))


def near_duplicates_and_confusables() -> tuple[list[str], list[str]]:
    """Layouts of a scene and of its near-duplicates (each transform issue 22 lists), and of the same shapes in the
    same places on other backgrounds (the embedded model puts them at cosine 0.996-0.999 to the scene)."""
    scene = sample_scene(0, "all", 3)
    picture = render_scene(scene, 192)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned back upright by the loader
    recoloured = ImageEnhance.Brightness(ImageEnhance.Color(picture).enhance(1.2)).enhance(0.9)
    copies = [layout_of(picture), layout_of(picture.resize((96, 96))), layout_of(picture, quality=30),
              layout_of(picture.crop((10, 6, 186, 182))), layout_of(picture.transpose(Image.Transpose.ROTATE_90),
                                                                    exif=exif.tobytes()),
              layout_of(recoloured), layout_of(render_scene(replace(scene, noise_seed=12345), 192))]
    others = [layout_of(render_scene(replace(scene, background=sample_scene(0, "all", n).background,
                                             noise_seed=n), 192)) for n in (41, 43, 47, 50)]
    return copies, others


def test_pictures_the_vectors_cannot_tell_apart_are_grouped_only_when_their_colour_layouts_agree():
    copies, others = near_duplicates_and_confusables()
    same_vector = unit(*[[1.0, 0.0, 0.0]] * (len(copies) + len(others)))  # what a model blind to backgrounds sees
    rows = np.arange(len(copies) + len(others))
    groups = group_items(rows, [str(row) for row in rows], same_vector, layouts=copies + others)
    assert {row: groups.get(row) for row in range(len(copies))} == dict.fromkeys(range(len(copies)), 0)
    assert all(groups.get(len(copies) + n) in (None, len(copies) + n) for n in range(len(others)))


def test_each_confusable_is_told_apart_from_the_original_by_its_layout_alone():
    copies, others = near_duplicates_and_confusables()
    original = layout.decode(copies[0])
    assert all(layout.distance(original, layout.decode(copy)) <= layout.TOLERANCE for copy in copies)
    assert all(layout.distance(original, layout.decode(other)) > 2 * layout.TOLERANCE for other in others)


def test_an_item_without_a_layout_is_grouped_by_its_vector_alone():
    copies, others = near_duplicates_and_confusables()
    groups = group_items(np.arange(3), ["a", "b", "c"], chain([0, 0.5, 0.7]), layouts=[copies[0], None, others[0]])
    assert groups == {0: 0, 1: 0}
