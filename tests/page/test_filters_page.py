"""The search page's filters, modes, channel marks and "Load more"."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.page.conftest import (
    FAVOURITES,
    SCENES,
    K,
    first_image_loaded,
    hits,
    scene_path,
    screenshot,
    search_text,
    shown_paths,
    trip,
)


def test_a_folder_picked_in_the_filters_runs_the_query_again_inside_it(page):
    assert len(search_text(page, "a red circle")) == K
    page.select_option("#folder", "trips/lisbon")
    expect(page.locator("#status")).to_contain_text("results for “a red circle” in trips/lisbon/")
    assert set(shown_paths(page)) == trip("trips/lisbon")


def test_tags_checked_in_the_filters_keep_only_tagged_results(page):
    page.check("#tag-list input[value=favourite]")
    found = search_text(page, "a blue square")
    assert {hit["path"] for hit in found} == {scene_path(index) for index in FAVOURITES}


def test_a_date_range_and_a_camera_are_sent_as_one_filter(page):
    page.fill("#taken-after", "2019-01-01")
    page.fill("#taken-before", "2019-12-31")
    page.select_option("#camera", "Google Pixel 8")
    with page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        found = search_text(page, "a green triangle")
    assert sent.value.post_data_json["filter"] == {"taken_after": "2019-01-01", "taken_before": "2019-12-31",
                                                   "camera": "Google Pixel 8"}
    assert {hit["path"] for hit in found} == trip("trips/lisbon")
    expect(page.locator(".hit .facts").first).to_contain_text("2019-07-04 · Google Pixel 8")
    first_image_loaded(page)
    screenshot(page, "filtered-query")


def test_an_image_search_keeps_to_the_chosen_folder(page, served):
    # Chromium does not show a multipart body with a file to playwright: the answer shows the filter arrived.
    page.select_option("#folder", "trips/porto")
    page.set_input_files("#file", served.images / "00007.png")
    expect(page.locator("#status")).to_contain_text("results for images like 00007.png in trips/porto/")
    assert set(shown_paths(page)) == trip("trips/porto")


def test_a_filter_that_matches_nothing_says_so_and_names_the_filters(page):
    page.select_option("#camera", "Canon EOS R5")
    page.fill("#taken-before", "2019-12-31")
    page.fill("#text", "a red circle")
    page.press("#text", "Enter")
    nothing = page.locator("#nothing")
    expect(nothing).to_have_text("Nothing matches “a red circle” taken on or before 2019-12-31, with a Canon EOS R5. "
                                 "Clear or widen the filters to see more.")
    expect(page.locator(".hit")).to_have_count(0)
    expect(page.locator("#more")).to_be_hidden()


def test_load_more_appends_the_next_page_of_new_results(page, served):
    # The page collapses duplicates: scenes the embedded model cannot tell apart (the same shapes in the same
    # places on other backgrounds) show once.
    distinct = SCENES - sum(group["size"] - 1 for group in served.client.get("/duplicates", params={"k": 100}).json()[
        "groups"])
    first = [hit["id"] for hit in search_text(page, "a red circle")]
    with page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        page.click("#more")
    expect(page.locator(".hit")).to_have_count(distinct)
    assert sent.value.post_data_json["cursor"]
    shown = [hit["id"] for hit in hits(page)]
    assert shown[:K] == first
    assert len(set(shown)) == distinct
    expect(page.locator("#status")).to_contain_text(f"{distinct} results for “a red circle”")
    expect(page.locator("#more")).to_be_hidden()  # the index holds no third page


def test_the_mode_is_sent_and_each_result_marks_the_channel_that_found_it(page):
    page.select_option("#mode", "keyword")
    with page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        found = search_text(page, "favourite")
    assert sent.value.post_data_json["mode"] == "keyword"
    assert {hit["path"] for hit in found} == {scene_path(index) for index in FAVOURITES}
    marks = page.eval_on_selector_all(".hit .channel", "marks => marks.map(mark => mark.textContent)")
    assert marks == ["keyword"] * len(found)


def test_text_read_in_a_picture_shows_on_hover(page):
    title = page.evaluate("resultCard({id: 1, score: 0.5, path: 'a.png', caption: null, channel: 'both', "
                          "ocr_text: 'EXIT 12'}).querySelector('.open').title")
    assert title == "Text in the picture: EXIT 12"
