"""Finding inside an index version: filters, the keyword channel and hybrid fusion, through the store's own API."""

from __future__ import annotations

import numpy as np
import pytest

from clipspace.errors import InvalidFilter
from clipspace.index.channels import find, reciprocal_rank_fusion, relative_score_fusion
from clipspace.index.filters import Near, SearchFilter
from clipspace.index.publish import open_current, publish_version
from clipspace.index.records import ItemRecord, SearchHit
from clipspace.index.writer import write_version
from clipspace.photos import PhotoFacts
from tests.test_store import MODEL, unit_rows

LISBON, PORTO = (38.7223, -9.1393), (41.1579, -8.6291)
ITEMS = [  # path, caption, facts
    ("holiday/2019/IMG_2041.jpg", "a red circle on the left", PhotoFacts(
        "JPEG", "2019-07-04T15:30:00+01:00", "exif", "Google", "Pixel 8", *LISBON, ("Lisbon", "tram"))),
    ("holiday/2019/IMG_2042.jpg", None, PhotoFacts(
        "HEIF", "2019-12-31T23:59:59", "exif", "Apple", "iPhone 15", *PORTO, ("Porto",))),
    ("holidays/2020/beach.png", "a blue square", PhotoFacts("PNG", "2020-01-01T00:00:00+00:00", "mtime")),
    ("work/slides/deck.png", None, PhotoFacts("PNG", "2018-03-02T10:00:00+00:00", "mtime", tags=("咖啡店的招牌",))),
    ("misc/猫.jpg", "一只红色的猫", PhotoFacts("JPEG", None, None, "NIKON CORPORATION", "NIKON D750")),
]
SIZES = [(4000, 3000), (640, 480), (1920, 1080), (1280, 720), (300, 300)]


@pytest.fixture
def version(tmp_path):
    records = [ItemRecord(index, path, f"{index:064x}", 10, 0, *SIZES[index], caption, facts)
               for index, (path, caption, facts) in enumerate(ITEMS)]
    captioned = sum(caption is not None for _, caption, _ in ITEMS)
    staging = write_version(tmp_path, records, unit_rows(len(ITEMS)), unit_rows(captioned, seed=1), model=MODEL,
                            factory="Flat", corpus_root=tmp_path, report={})
    publish_version(tmp_path, staging)
    return open_current(tmp_path)


def selected(version, **fields) -> list[str]:
    rows = version.select(SearchFilter(**fields))
    return sorted(ITEMS[row][0] for row in rows)


def test_a_path_prefix_selects_a_folder_and_what_is_under_it_not_a_sibling_with_a_longer_name(version):
    assert selected(version, path_prefix="holiday") == ["holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg"]
    assert selected(version, path_prefix="/holiday/2019/") == selected(version, path_prefix="holiday")
    assert selected(version, path_prefix="../holiday") == []


def test_capture_dates_are_inclusive_and_compared_on_the_photographers_clock(version):
    assert selected(version, taken_after="2019-12-31", taken_before="2019-12-31") == ["holiday/2019/IMG_2042.jpg"]
    assert selected(version, taken_after="2019-07-04T15:30") == [
        "holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg", "holidays/2020/beach.png"]


def test_camera_is_a_case_insensitive_substring_of_make_and_model(version):
    assert selected(version, camera="pixel") == ["holiday/2019/IMG_2041.jpg"]
    assert selected(version, camera="nikon d7") == ["misc/猫.jpg"]


def test_near_keeps_what_lies_within_the_distance(version):
    assert selected(version, near=Near(*LISBON, km=50)) == ["holiday/2019/IMG_2041.jpg"]
    assert selected(version, near=Near(*LISBON, km=300)) == ["holiday/2019/IMG_2041.jpg",
                                                               "holiday/2019/IMG_2042.jpg"]


def test_tags_match_any_case_insensitively(version):
    assert selected(version, tags=("lisbon", "PORTO")) == ["holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg"]


def test_formats_understand_common_names(version):
    assert selected(version, formats=("heic", "jpg")) == [
        "holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg", "misc/猫.jpg"]


def test_minimum_sizes_and_combined_fields_narrow_together(version):
    assert selected(version, min_width=1280, min_height=720) == [
        "holiday/2019/IMG_2041.jpg", "holidays/2020/beach.png", "work/slides/deck.png"]
    assert selected(version, min_width=1280, formats=("PNG",), taken_before="2019-01-01") == ["work/slides/deck.png"]


def test_a_filter_that_matches_nothing_selects_nothing_and_an_empty_filter_everything(version):
    assert selected(version, camera="leica") == []
    assert version.select(SearchFilter()) is None


@pytest.mark.parametrize("fields", [{"taken_after": "last tuesday"}, {"near": Near(91, 0, 1)},
                                    {"near": Near(0, 0, 0)}, {"formats": ("raw",)}])
def test_a_malformed_filter_is_refused_with_what_is_wrong(version, fields):
    with pytest.raises(InvalidFilter):
        version.select(SearchFilter(**fields))


def test_a_filtered_vector_search_answers_only_selected_items_and_all_of_them(version):
    rows = version.select(SearchFilter(path_prefix="holiday"))
    hits = version.search(unit_rows(len(ITEMS))[4], 10, rows=rows)
    assert sorted(hit.path for hit in hits) == ["holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg"]


def keyword_paths(version, text, **fields):
    return [record.path for record, _ in version.keyword_search(text, 10, SearchFilter(**fields))]


def test_a_file_name_finds_its_file(version):
    assert keyword_paths(version, "IMG_2041") == ["holiday/2019/IMG_2041.jpg"]


def test_every_word_of_a_keyword_query_must_match(version):
    assert keyword_paths(version, "red circle") == ["holiday/2019/IMG_2041.jpg"]
    assert keyword_paths(version, "red square") == []


def test_folder_names_and_tags_are_words_too(version):
    assert keyword_paths(version, "slides") == ["work/slides/deck.png"]
    assert keyword_paths(version, "TRAM") == ["holiday/2019/IMG_2041.jpg"]


def test_chinese_words_of_one_or_two_characters_match_inside_longer_text(version):
    assert keyword_paths(version, "咖啡") == ["work/slides/deck.png"]
    assert keyword_paths(version, "红色") == keyword_paths(version, "猫") == ["misc/猫.jpg"]


def test_the_keyword_channel_runs_inside_the_filter(version):
    assert sorted(keyword_paths(version, "IMG", path_prefix="holiday")) == [
        "holiday/2019/IMG_2041.jpg", "holiday/2019/IMG_2042.jpg"]
    assert keyword_paths(version, "IMG", camera="apple") == ["holiday/2019/IMG_2042.jpg"]
    assert keyword_paths(version, "IMG", tags=("lisbon",)) == ["holiday/2019/IMG_2041.jpg"]  # tags: both tables


def test_punctuation_and_quotes_cannot_break_a_keyword_query(version):
    assert keyword_paths(version, 'tram" OR "x') == []
    assert keyword_paths(version, " -- ?? ") == []


def test_hybrid_marks_the_channel_that_found_each_result(version):
    query = unit_rows(len(ITEMS))[0]
    found = {result.hit.path: result.channel for result in find(version, query, "IMG_2042", 5, mode="hybrid")}
    assert found["holiday/2019/IMG_2042.jpg"] == "both"
    assert found["holiday/2019/IMG_2041.jpg"] == "vector"
    assert set(found.values()) <= {"vector", "both"}


@pytest.mark.parametrize("fusion", [reciprocal_rank_fusion, relative_score_fusion])
def test_fusion_ranks_an_item_both_channels_found_above_one_only_one_found(fusion):
    def hits(*ids):
        return [SearchHit(item_id, 1.0 - rank / 10, f"{item_id}.jpg", None) for rank, item_id in enumerate(ids)]

    fused = fusion(hits(1, 2, 3), hits(2, 4), 10)
    assert fused[0].hit.id == 2 and fused[0].channel == "both"
    assert {result.hit.id for result in fused} == {1, 2, 3, 4}
    assert [result.hit.score for result in fused] == sorted((result.hit.score for result in fused), reverse=True)


def test_a_keyword_search_needs_no_vector(version):
    found = find(version, None, "beach", 5, mode="keyword")
    assert [(result.hit.path, result.channel) for result in found] == [("holidays/2020/beach.png", "keyword")]
    assert np.isfinite(found[0].hit.score)


def test_facets_count_folders_with_what_is_below_them_years_cameras_and_tags(version):
    facets = version.facets
    assert dict(facets.folders) == {"holiday": 2, "holiday/2019": 2, "holidays": 1, "holidays/2020": 1, "work": 1,
                                    "work/slides": 1, "misc": 1}
    assert facets.years == [("2020", 1), ("2019", 2), ("2018", 1)]
    assert dict(facets.cameras) == {"Google Pixel 8": 1, "Apple iPhone 15": 1, "NIKON D750": 1}
    assert dict(facets.tags) == {"Lisbon": 1, "tram": 1, "Porto": 1, "咖啡店的招牌": 1}


def test_hybrid_with_no_keyword_match_answers_the_vector_search_unchanged(version):
    query = unit_rows(len(ITEMS))[2]
    hybrid = find(version, query, "nothing here matches", 5, mode="hybrid")
    vector = find(version, query, "nothing here matches", 5, mode="vector")
    assert hybrid == vector and {result.channel for result in hybrid} == {"vector"}


def test_the_words_around_what_is_looked_for_are_not_required(version):
    assert keyword_paths(version, "the tram") == keyword_paths(version, "tram") == ["holiday/2019/IMG_2041.jpg"]
    # a query of such words alone still searches for them: "a" is a word of two captions
    assert sorted(keyword_paths(version, "a")) == ["holiday/2019/IMG_2041.jpg", "holidays/2020/beach.png"]
