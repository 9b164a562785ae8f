"""The search page collapses duplicates by default and says how many a result stands for."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import build, running_service
from tests.page.conftest import hits, screenshot, search_text
from tests.test_duplicates_service import GROUP_A, write_library

SIMILAR_TO_A = f"+{len(GROUP_A) - 1} similar"  # a member of group A stands for all the others


@pytest.fixture(scope="module")
def library(tmp_path_factory, embedded):
    root = tmp_path_factory.mktemp("duplicates-page")
    write_library(root / "images")
    build(root / "images", root / "index", embedded)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.root_images = root / "images"
        yield service


@pytest.fixture
def library_page(browser: Browser, library) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(library.url + "/")
    expect(opened.locator("body")).to_have_attribute("data-ready", "true")
    opened.uncheck("#likely")  # every result, as the other page tests walk them: these pictures have no captions
    yield opened
    context.close()


def test_a_group_of_duplicates_shows_once_with_how_many_it_stands_for(library_page):
    with library_page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        found = search_text(library_page, "a large red triangle at the top")
    assert sent.value.post_data_json["collapse_duplicates"] is True
    from_a = [hit for hit in found if hit["path"] in GROUP_A]
    assert len(from_a) == 1
    card = library_page.locator(f".hit[data-id='{from_a[0]['id']}']")
    expect(card.locator(".similar")).to_have_text(SIMILAR_TO_A)
    screenshot(library_page, "duplicates-collapsed")
    assert len({hit["id"] for hit in hits(library_page)}) == len(found)


def test_an_uploaded_picture_is_searched_with_its_duplicates_collapsed(library_page, library):
    with library_page.expect_request(lambda sent: "/search/image" in sent.url) as sent:
        library_page.set_input_files("#file", library.root_images / "a" / "original.jpg")
    assert "collapse_duplicates=true" in sent.value.url
    expect(library_page.locator(".hit").first.locator(".similar")).to_have_text(SIMILAR_TO_A)
