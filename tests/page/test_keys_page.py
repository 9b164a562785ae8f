"""The page in front of a keyed service: it asks for the key once, keeps it for the tab, never puts it in a URL."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from app.keys import add_key
from tests.conftest import running_service
from tests.page.conftest import SCENES, first_image_loaded, screenshot, search_text


@pytest.fixture(scope="module")
def keyed(served, tmp_path_factory):
    """The page tests' index, served again behind one key."""
    keys_file = tmp_path_factory.mktemp("page-keys") / "keys.txt"
    key = add_key(keys_file, "page")
    with running_service(index_dir=served.images.parent / "index", api_keys_file=keys_file) as service:
        service.key = key
        service.wait_until(lambda: service.client.get("/readyz").status_code == 200, timeout=120)
        yield service


@pytest.fixture
def tab(browser: Browser, keyed):
    """A fresh tab that records every URL it asks for."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.requested = []
    opened.on("request", lambda request: opened.requested.append(request.url))
    yield opened
    context.close()


def give_key(page: Page, key: str) -> None:
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key", key)
    page.click("#key-use")


def test_the_page_asks_for_the_key_once_and_keeps_it_for_the_tab(tab, keyed):
    tab.goto(keyed.url + "/")
    give_key(tab, keyed.key + "-wrong")
    expect(tab.locator("#key-problem")).to_contain_text("not accepted")
    screenshot(tab, "key-prompt")
    give_key(tab, keyed.key)
    expect(tab.locator("body")).to_have_attribute("data-ready", "true")
    expect(tab.locator("#about")).to_contain_text(f"{SCENES} images")
    assert search_text(tab, "a red circle")
    first_image_loaded(tab)  # every thumbnail fetched with the key, shown from a blob: URL
    tab.wait_for_function("() => Array.from(document.querySelectorAll('.hit img')).every(img =>"
                          " img.src.startsWith('blob:'))")
    tab.locator(".hit .open").first.click()
    tab.wait_for_function("() => document.getElementById('viewer-image').naturalWidth > 0")
    assert tab.get_attribute("#viewer-original", "href").startswith("blob:")
    tab.click("#viewer-close")
    tab.reload()  # the same tab: no second question
    expect(tab.locator("body")).to_have_attribute("data-ready", "true")
    expect(tab.locator("#key-dialog")).to_be_hidden()
    assert search_text(tab, "a blue square")
    assert not [url for url in tab.requested if keyed.key in url]


def test_without_a_key_the_page_says_one_is_needed(tab, keyed):
    tab.goto(keyed.url + "/")
    expect(tab.locator("#key-dialog")).to_be_visible()
    tab.click("#key-dialog button[value=cancel]")
    expect(tab.locator("body")).to_have_attribute("data-ready", "true")
    expect(tab.locator("#error")).to_contain_text("needs an API key")
