"""Fixtures of the page tests: the search page at / in a real headless Chromium, a real uvicorn, a real index.

Debian's `chromium` is driven by the playwright package (its own browser download cannot work here);
`make browser` installs it. Screenshots go to var/screenshots/ (not committed) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from playwright.sync_api import Browser, Page, expect, sync_playwright

from clipspace.align.photo_metadata import camera_exif, xmp_packet
from clipspace.align.world import write_world
from tests.conftest import ROOT, build, running_service

SCREENSHOTS = ROOT / "var" / "screenshots"
SCENES = 60
K = 50
expect.set_options(timeout=30_000)  # a loaded CI machine may take seconds for a query; the default is 5 s
# The demo world as a photo library: the last 20 scenes are two trips, each shot with one camera on one day, and
# every fifth scene is tagged by a photo tool. Scenes are referred to by the index write_world gives them.
TRIPS = {"trips/lisbon": (range(40, 50), ("Google", "Pixel 8", "2019:07:04 10:00:00")),
         "trips/porto": (range(50, 60), ("Canon", "Canon EOS R5", "2021:05:10 09:30:00"))}
FAVOURITES = range(0, SCENES, 5)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """Debian's chromium; skipped where it is missing, except on CI, which must run this test."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Debian's chromium is not installed: `make browser` installs it (apt-get, as root)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; on CI the browser test must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Browser:
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def scene_path(index: int) -> str:
    folder = next((name for name, (scenes, _) in TRIPS.items() if index in scenes), "")
    return f"{folder}/{index:05d}.png".lstrip("/")


def tagged(index: int) -> tuple[str, ...]:
    return ("favourite",) if index in FAVOURITES else ()


def arrange_library(images: Path) -> None:
    """Move the trips' scenes (and their caption sidecars) into their folders and write what the camera and the
    photo tool would have: EXIF capture time and camera, XMP keywords."""
    for index in range(SCENES):
        source, target = images / f"{index:05d}.png", images / scene_path(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        source.with_suffix(".txt").rename(target.with_suffix(".txt"))
        exif = next((camera_exif(make=make, model=model, taken=taken, offset=None)
                     for scenes, (make, model, taken) in TRIPS.values() if index in scenes), None)
        keywords = PngImagePlugin.PngInfo()
        if tagged(index):
            keywords.add_itxt("XML:com.adobe.xmp", xmp_packet(*tagged(index)).decode())
        with Image.open(source) as picture:
            picture.load()
        picture.save(target, exif=exif or Image.Exif(), pnginfo=keywords)
        if source != target:
            source.unlink()


@pytest.fixture(scope="package")
def served(tmp_path_factory, embedded):
    """60 scenes of the demo world, indexed with the embedded model, so queries mean something on screen; the last
    20 in two folders, with camera, capture time and keywords (TRIPS, FAVOURITES)."""
    root = tmp_path_factory.mktemp("page")
    write_world(root / "images", SCENES, seed=11, split="all")
    arrange_library(root / "images")
    build(root / "images", root / "index", embedded)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images = root / "images"
        service.composed = "post" in service.client.get("/openapi.json").json()["paths"].get("/search", {})
        yield service


@pytest.fixture
def default_page(browser: Browser, served) -> Page:
    """The page as a person first sees it (text queries ask for likely matches only)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(served.url + "/")
    expect(opened.locator("body")).to_have_attribute("data-ready", "true")
    yield opened
    context.close()


@pytest.fixture
def page(default_page: Page) -> Page:
    """The page showing every result: the tests of order, paging and filters walk all of them
    (test_relevance_page.py covers the default cut)."""
    default_page.uncheck("#likely")
    return default_page


@pytest.fixture
def composed(served) -> None:
    if not served.composed:
        pytest.skip("this service has no POST /search (composed queries) yet")


def screenshot(page: Page, name: str) -> None:
    """Save what a person would see: after the pictures inside the viewport have loaded."""
    page.wait_for_function("() => Array.from(document.images).filter(img => img.getBoundingClientRect().top"
                           " < innerHeight && img.offsetParent).every(img => img.complete && img.naturalWidth)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=False)


def hits(page: Page) -> list[dict]:
    return page.eval_on_selector_all(
        ".hit", "cards => cards.map(c => ({id: +c.dataset.id, score: +c.dataset.score, path: c.dataset.path}))")


def search_text(page: Page, text: str) -> list[dict]:
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#status")).to_contain_text(f"results for “{text}”")
    return hits(page)


def first_image_loaded(page: Page) -> None:
    page.wait_for_function("() => { const img = document.querySelector('.hit img');"
                           " return img && img.complete && img.naturalWidth > 0; }")


def trip(folder: str) -> set[str]:
    return {scene_path(index) for index in TRIPS[folder][0]}


def shown_paths(page: Page) -> list[str]:
    return [hit["path"] for hit in hits(page)]


@pytest.fixture(scope="package")
def unready(tmp_path_factory):
    """A service with no index yet and a 2000-byte upload limit."""
    with running_service(index_dir=tmp_path_factory.mktemp("unready") / "index", max_upload_bytes=2000) as service:
        yield service


@pytest.fixture
def unready_page(browser: Browser, unready) -> Page:
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(unready.url + "/")
    expect(opened.locator("body")).to_have_attribute("data-ready", "true")
    yield opened
    context.close()
