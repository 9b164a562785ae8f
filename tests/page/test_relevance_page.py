"""The page's default relevance cut: "nothing matches" instead of a grid of noise, and likely matches kept."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.page.conftest import hits, search_text


def test_a_query_for_something_the_library_lacks_says_nothing_matches_instead_of_a_grid(default_page):
    with default_page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        default_page.fill("#text", "a dog")
        default_page.press("#text", "Enter")
    assert sent.value.post_data_json["min_relevance"] == 0.5
    expect(default_page.locator("#nothing")).to_have_text(
        "Nothing matches “a dog”. Untick “Only likely matches” to see the nearest pictures anyway.")
    expect(default_page.locator(".hit")).to_have_count(0)


def test_a_query_for_what_the_library_holds_shows_its_likely_matches(default_page):
    shown = search_text(default_page, "a blue square")
    assert 0 < len(shown) < 50 and shown == hits(default_page)


def test_unticking_only_likely_matches_shows_the_nearest_pictures_anyway(default_page):
    default_page.fill("#text", "a dog")
    default_page.press("#text", "Enter")
    expect(default_page.locator("#nothing")).to_be_visible()
    default_page.uncheck("#likely")
    expect(default_page.locator(".hit")).to_have_count(50)
