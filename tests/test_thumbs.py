"""GET /thumbs/{id}: small WebP previews of indexed images, cached by content hash, revalidated by ETag."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from benchmarks.corpus import generate_corpus
from clipspace.thumbnails import THUMB_RECIPE, THUMB_SIDE, ThumbnailCache
from tests.conftest import build, encoded, make_image, running_service

PHOTOS = 50
PHOTO_SIZE = (1200, 800)  # photo-like content at a size a test can afford to generate; see docs/decisions.md
GRID_BUDGET_BYTES = 1_000_000


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    """50 photo-like JPEGs (every fourth portrait), an EXIF-rotated JPEG, a small PNG, and one to delete."""
    root = tmp_path_factory.mktemp("thumbs")
    images = root / "images"
    generate_corpus(images, PHOTOS, PHOTO_SIZE)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": stored 300x200, shown 200x300
    make_image(1, size=(300, 200)).save(images / "rotated.jpg", exif=exif)
    make_image(2, size=(100, 80)).save(images / "small.png")
    make_image(3).save(images / "gone.png")
    build(images, root / "index", tiny_encoder)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.images, service.index = images, root / "index"
        service.ids = {hit["path"]: hit["id"] for hit in service.client.post(
            "/search/text", json={"text": "anything", "k": 1000}).json()["results"]}
        yield service


def thumbnail_of(service, path: str):
    return service.client.get(f"/thumbs/{service.ids[path]}")


def picture(answer) -> Image.Image:
    return Image.open(io.BytesIO(answer.content))


def test_thumbnail_is_webp_at_most_256_px_on_its_longest_side(served):
    answer = thumbnail_of(served, "img_000001.jpg")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/webp"
    assert picture(answer).size == (THUMB_SIDE, round(THUMB_SIDE * 800 / 1200))


def test_thumbnail_is_upright_as_the_exif_orientation_says(served):
    assert picture(thumbnail_of(served, "rotated.jpg")).size == (round(THUMB_SIDE * 200 / 300), THUMB_SIDE)


def test_small_image_is_not_enlarged(served):
    assert picture(thumbnail_of(served, "small.png")).size == (100, 80)


def test_thumbnail_answer_tells_browsers_how_to_cache_it(served):
    answer = thumbnail_of(served, "img_000002.jpg")
    assert "max-age=" in answer.headers["cache-control"]
    assert answer.headers["etag"].startswith('"')


def test_if_none_match_with_the_current_etag_answers_304_without_a_body(served):
    etag = thumbnail_of(served, "img_000003.jpg").headers["etag"]
    again = served.client.get(f"/thumbs/{served.ids['img_000003.jpg']}", headers={"If-None-Match": f'W/"x", {etag}'})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)


def test_if_none_match_with_another_etag_answers_the_thumbnail(served):
    answer = served.client.get(f"/thumbs/{served.ids['img_000004.jpg']}", headers={"If-None-Match": '"stale"'})
    assert answer.status_code == 200 and picture(answer).format == "WEBP"


def test_thumbnail_of_an_unknown_id_returns_404(served):
    answer = served.client.get("/thumbs/999999")
    assert answer.status_code == 404 and "no indexed image" in answer.json()["detail"]


def test_thumbnail_of_a_file_deleted_from_disk_returns_404(served):
    gone = served.images / "gone.png"
    kept = gone.read_bytes()
    gone.unlink()
    try:
        answer = thumbnail_of(served, "gone.png")
    finally:
        gone.write_bytes(kept)  # the other tests share this corpus
    assert answer.status_code == 404 and "no longer" in answer.json()["detail"]


def test_thumbnail_is_cached_under_the_content_hash_of_its_image(served):
    answer = thumbnail_of(served, "img_000005.jpg")
    sha256 = hashlib.sha256((served.images / "img_000005.jpg").read_bytes()).hexdigest()
    cached = served.index / "thumbs" / THUMB_RECIPE / sha256[:2] / f"{sha256}.webp"
    assert cached.read_bytes() == answer.content


def test_a_grid_of_50_photo_results_transfers_under_1_mb(served):
    """What the page loads for 50 results: the JSON answer and one thumbnail per result."""
    answer = served.client.post("/search/text", json={"text": "a photo", "k": 50})
    hits = answer.json()["results"]
    thumbs = [served.client.get(f"/thumbs/{hit['id']}") for hit in hits]
    assert len(hits) == 50 and {thumb.status_code for thumb in thumbs} == {200}
    transferred = len(answer.content) + sum(len(thumb.content) for thumb in thumbs)
    print(f"a grid of 50 results transfers {transferred:,} bytes")
    assert transferred <= GRID_BUDGET_BYTES


def test_an_unwritable_cache_folder_still_makes_thumbnails(tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(encoded(make_image(4, size=(640, 480)), "PNG"))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    thumb = ThumbnailCache(blocked).get(source, hashlib.sha256(source.read_bytes()).hexdigest())
    assert Image.open(io.BytesIO(thumb.data)).size == (THUMB_SIDE, 192)
