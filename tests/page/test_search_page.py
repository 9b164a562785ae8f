"""The search page: queries by text and by image, composed queries, errors, a phone screen."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.page.conftest import (
    K,
    first_image_loaded,
    hits,
    screenshot,
    search_text,
)


def test_text_query_shows_results_in_score_order(page):
    found = search_text(page, "a red circle")
    first_image_loaded(page)
    screenshot(page, "text-query")
    scores = [hit["score"] for hit in found]
    assert len(found) == K
    assert scores == sorted(scores, reverse=True)


def test_results_show_thumbnails_not_full_images(page):
    found = search_text(page, "a blue square")
    first_image_loaded(page)
    sources = page.eval_on_selector_all(".hit img", "imgs => imgs.map(img => new URL(img.src).pathname)")
    assert sources == [f"/thumbs/{hit['id']}" for hit in found]


def test_each_result_shows_its_score_and_caption(page, served):
    best = search_text(page, "a green triangle")[0]
    caption = (served.images / best["path"]).with_suffix(".txt").read_text(encoding="utf-8").strip()
    card = page.locator(".hit").first
    expect(card.locator(".score")).to_have_text(f"{best['score']:.3f}")
    expect(card.locator("figcaption")).to_contain_text(caption)


def test_uploading_an_indexed_image_puts_it_first_with_score_one(page, served):
    page.set_input_files("#file", served.images / "00007.png")
    expect(page.locator("#status")).to_contain_text("results for images like 00007.png")
    first = hits(page)[0]
    screenshot(page, "image-query")
    assert first["path"] == "00007.png"
    assert first["score"] == pytest.approx(1.0, abs=1e-4)
    expect(page.locator(".hit .score").first).to_have_text("1.000")


def drop_or_paste(page: Page, event: str, image: Path) -> None:
    """Fire a real DOM drop or paste event that carries the image as a file, as a person's gesture would."""
    page.evaluate("""([event, data, name]) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const carrier = new DataTransfer();
        carrier.items.add(new File([bytes], name, {type: "image/png"}));
        const options = {bubbles: true, cancelable: true};
        if (event === "paste") {
            document.body.dispatchEvent(new ClipboardEvent("paste", {...options, clipboardData: carrier}));
        } else {
            document.body.dispatchEvent(new DragEvent("dragover", {...options, dataTransfer: carrier}));
            document.body.dispatchEvent(new DragEvent("drop", {...options, dataTransfer: carrier}));
        }
    }""", [event, base64.b64encode(image.read_bytes()).decode(), image.name])


def test_dropping_an_image_searches_by_it(page, served):
    drop_or_paste(page, "drop", served.images / "00011.png")
    expect(page.locator("#status")).to_contain_text("results for images like 00011.png")
    assert hits(page)[0]["path"] == "00011.png"


def test_pasting_an_image_searches_by_it(page, served):
    drop_or_paste(page, "paste", served.images / "00012.png")
    expect(page.locator("#status")).to_contain_text("results for images like 00012.png")
    assert hits(page)[0]["path"] == "00012.png"


def test_more_like_this_searches_by_the_clicked_result(page):
    chosen = search_text(page, "a yellow star")[3]
    page.locator(".hit .more").nth(3).click()
    expect(page.locator("#status")).to_contain_text(f"results for images like #{chosen['id']}")
    first = hits(page)[0]
    screenshot(page, "more-like-this")
    assert first["id"] == chosen["id"]
    assert first["score"] == pytest.approx(1.0, abs=1e-4)


def test_more_like_this_asks_post_search_for_the_image_id(page, composed):
    chosen = search_text(page, "a yellow star")[2]
    with page.expect_request(lambda sent: sent.method == "POST" and sent.url.endswith("/search")) as sent:
        page.locator(".hit .more").nth(2).click()
    assert sent.value.post_data_json == {"terms": [{"image_id": chosen["id"], "weight": 1}], "k": K,
                                         "collapse_duplicates": True}


def test_composed_query_adds_and_subtracts_text(page, composed):
    chosen = search_text(page, "a purple circle")[0]
    page.locator(".hit .more").first.click()
    query = f"results for images like #{chosen['id']}"
    expect(page.locator("#status")).to_contain_text(query)
    page.fill("#refine-text", "blue")
    page.click("#add-plus")
    expect(page.locator("#status")).to_contain_text(f"{query} + “blue”")
    page.fill("#refine-text", "small")
    with page.expect_request(lambda sent: sent.method == "POST" and sent.url.endswith("/search")) as sent:
        page.click("#add-minus")
    expect(page.locator("#status")).to_contain_text(f"{query} + “blue” − “small”")
    screenshot(page, "composed-query")
    assert sent.value.post_data_json["terms"] == [{"image_id": chosen["id"], "weight": 1},
                                                  {"text": "blue", "weight": 1}, {"text": "small", "weight": -1}]


def test_clicking_a_thumbnail_shows_the_full_image(page, served):
    best = search_text(page, "a large orange hexagon")[0]
    page.locator(".hit .open").first.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    page.wait_for_function("() => document.getElementById('viewer-image').naturalWidth > 0")
    screenshot(page, "viewer")
    assert page.eval_on_selector("#viewer-image", "img => new URL(img.src).pathname") == f"/images/{best['id']}"


def test_uploading_a_non_image_shows_a_readable_message(page):
    page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"})
    error = page.locator("#error")
    expect(error).to_be_visible()
    screenshot(page, "not-an-image")
    expect(error).to_contain_text("not an image clipspace can read")
    expect(error).not_to_contain_text("{")


def test_validation_errors_read_as_field_and_reason(page):
    said = page.evaluate("explain(422, {detail: [{loc: ['body', 'text'], msg: 'String should have at most "
                         "1000 characters'}]})")
    assert said == "The query was not accepted: text: String should have at most 1000 characters"


def test_chinese_query_is_sent_as_typed_and_answered(page):
    with page.expect_request(lambda sent: sent.url.endswith("/search/text")) as sent:
        found = search_text(page, "红色的圆形")
    assert sent.value.post_data_json["text"] == "红色的圆形"
    assert len(found) == K


def test_page_fits_a_phone_screen(browser, served):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    try:
        phone.goto(served.url + "/")
        expect(phone.locator("body")).to_have_attribute("data-ready", "true")
        search_text(phone, "两个蓝色的正方形")
        first_image_loaded(phone)
        screenshot(phone, "phone")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert phone.locator(".hit").first.bounding_box()["width"] >= 90  # still a picture, not a speck
    finally:
        context.close()


def test_a_service_without_an_index_explains_why(unready_page):
    error = unready_page.locator("#error")
    expect(error).to_contain_text("The search service is not ready")
    expect(error).to_contain_text("index_builder")


def test_an_upload_over_the_size_limit_is_explained(unready_page, served):
    unready_page.set_input_files("#file", served.images / "00001.png")
    expect(unready_page.locator("#error")).to_contain_text("Too large: body")
