"""Steering a search over HTTP (a real uvicorn): filters, photo metadata in results, modes, paging, facets."""

from __future__ import annotations

import json

import pytest

from clipspace.align.photo_metadata import camera_exif, xmp_packet
from tests.conftest import build, encoded, make_image, running_service, write_corpus
from tests.photo_files import LISBON, write

PLAIN = [f"plain/{n:02d}.png" for n in range(30)]
PHOTOS = {"trip/IMG_2041.jpg", "trip/IMG_2042.heic", "work/deck.png"}
EVERYTHING = set(PLAIN) | PHOTOS


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("find")
    images = root / "images"
    write_corpus(images, PLAIN)
    (images / "trip").mkdir()
    (images / "work").mkdir()
    write(images / "trip" / "IMG_2041.jpg", exif=camera_exif(gps=LISBON), xmp=xmp_packet("Lisbon", "tram"))
    write(images / "trip" / "IMG_2042.heic", "HEIF", exif=camera_exif(make="Apple", model="iPhone 15",
                                                                       taken="2019:12:31 23:00:00").tobytes())
    make_image(5, size=(1920, 1080)).save(images / "work" / "deck.png")
    (images / "work" / "deck.txt").write_text("quarterly revenue slide", encoding="utf-8")
    build(images, root / "index", tiny_encoder)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.root = root
        yield service


def text(service, query="a red circle", **body):
    return service.client.post("/search/text", json={"text": query, "k": 100, "mode": "vector", **body})


def paths(answer) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {result["path"] for result in answer.json()["results"]}


@pytest.mark.parametrize(("search_filter", "expected"), [
    ({"path_prefix": "trip"}, {"trip/IMG_2041.jpg", "trip/IMG_2042.heic"}),
    ({"taken_after": "2019-12-31", "taken_before": "2019-12-31T23:59"}, {"trip/IMG_2042.heic"}),
    ({"camera": "PIXEL"}, {"trip/IMG_2041.jpg"}),
    ({"near": {"lat": 38.72, "lon": -9.14, "km": 10}}, {"trip/IMG_2041.jpg"}),
    ({"tags": ["tram", "nowhere"]}, {"trip/IMG_2041.jpg"}),
    ({"formats": ["heic"]}, {"trip/IMG_2042.heic"}),
    ({"min_width": 1000, "min_height": 1100}, set()),
    ({"min_width": 1920}, {"work/deck.png"}),
    ({"path_prefix": "trip", "formats": ["jpeg", "png"], "taken_after": "2021-01-01"}, {"trip/IMG_2041.jpg"}),
], ids=["folder", "dates", "camera", "near", "tags", "formats", "nothing", "width", "combined"])
def test_each_filter_field_alone_and_combined_answers_exactly_the_matching_items(served, search_filter, expected):
    assert paths(text(served, filter=search_filter)) == expected


def test_an_image_query_takes_the_filter_as_a_json_form_field(served):
    answer = served.client.post("/search/image", params={"k": 50}, data={"filter": json.dumps({"path_prefix": "trip"})},
                                files={"file": ("q.jpg", encoded(make_image(1), "JPEG"), "image/jpeg")})
    assert paths(answer) == {"trip/IMG_2041.jpg", "trip/IMG_2042.heic"}


def test_a_composed_query_takes_the_filter(served):
    answer = served.client.post("/search", json={"terms": [{"text": "a square"}], "k": 50,
                                                 "filter": {"formats": ["heif", "jpeg"]}})
    assert paths(answer) == {"trip/IMG_2041.jpg", "trip/IMG_2042.heic"}


def test_a_result_carries_the_photos_capture_time_camera_place_and_tags(served):
    (result,) = text(served, filter={"camera": "pixel"}).json()["results"]
    assert (result["taken_at"], result["taken_at_source"]) == ("2021-07-04T15:30:00+01:00", "exif")
    assert (result["camera"], result["tags"], result["channel"]) == ("Google Pixel 8", ["Lisbon", "tram"], "vector")
    assert (result["lat"], result["lon"]) == (pytest.approx(38.7083333), pytest.approx(-9.14))


@pytest.mark.parametrize(("search_filter", "detail"), [
    ({"taken_after": "last tuesday"}, "taken_after"),
    ({"colour": "red"}, "colour"),
    ({"near": {"lat": 120, "lon": 0, "km": 5}}, "lat"),
    ({"near": {"lat": 0, "lon": 0}}, "km"),
    ({"formats": ["raw"]}, "formats"),
    ({"tags": "tram"}, "tags"),
], ids=["date", "unknown field", "latitude", "missing km", "format", "tags not a list"])
def test_a_malformed_filter_is_a_422_that_names_what_is_wrong(served, search_filter, detail):
    answer = text(served, filter=search_filter)
    assert answer.status_code == 422
    assert detail in json.dumps(answer.json()["detail"])


def test_a_malformed_filter_form_field_is_a_422(served):
    answer = served.client.post("/search/image", data={"filter": "{not json"},
                                files={"file": ("q.jpg", encoded(make_image(1), "JPEG"), "image/jpeg")})
    assert answer.status_code == 422 and "filter" in json.dumps(answer.json()["detail"])


def test_a_file_name_is_found_by_the_keyword_and_hybrid_modes_and_marked_so(served):
    keyword = text(served, "IMG_2041", mode="keyword").json()["results"]
    hybrid = text(served, "IMG_2041", mode="hybrid").json()["results"]
    assert [(r["path"], r["channel"]) for r in keyword] == [("trip/IMG_2041.jpg", "keyword")]
    assert hybrid[0]["path"] == "trip/IMG_2041.jpg" and hybrid[0]["channel"] in ("keyword", "both")
    assert len(hybrid) == len(EVERYTHING)  # the vector channel still ranks every item


def test_the_vector_mode_ignores_words_and_finds_by_meaning_only(served):
    results = text(served, "IMG_2041", mode="vector").json()["results"]
    assert {r["channel"] for r in results} == {"vector"} and len(results) == len(EVERYTHING)


def test_a_caption_word_and_a_tag_are_keywords(served):
    assert paths(text(served, "revenue", mode="keyword")) == {"work/deck.png"}
    assert paths(text(served, "Lisbon", mode="keyword")) == {"trip/IMG_2041.jpg"}


def walk(service, k, **body) -> list[int]:
    seen, cursor = [], None
    for _ in range(100):
        page = service.client.post("/search/text", json={"text": "a red circle", "k": k, "mode": "vector",
                                                          **body, **({"cursor": cursor} if cursor else {})}).json()
        seen += [result["id"] for result in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


def test_a_cursor_walk_gives_every_result_once_in_the_order_of_one_long_page(served):
    whole = [r["id"] for r in text(served, k=1000).json()["results"]]
    assert walk(served, 7) == whole and len(whole) == len(EVERYTHING)


def test_a_filtered_walk_stays_inside_the_filter(served):
    assert len(walk(served, 1, filter={"path_prefix": "trip"})) == 2


def test_a_cursor_of_another_query_or_forged_is_a_400(served):
    cursor = text(served, k=3).json()["next_cursor"]
    other = text(served, "a blue square", k=3, cursor=cursor)
    forged = text(served, k=3, cursor=cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"))
    assert (other.status_code, forged.status_code) == (400, 400)
    assert "another query" in other.json()["detail"]


def test_facets_count_folders_years_cameras_and_tags(served):
    facets = served.client.get("/facets").json()
    as_dict = {name: {f["value"]: f["count"] for f in facets[name]} for name in ("folders", "cameras", "tags")}
    assert as_dict["folders"] == {"plain": 30, "trip": 2, "work": 1}
    assert as_dict["cameras"] == {"Google Pixel 8": 1, "Apple iPhone 15": 1}
    assert as_dict["tags"] == {"Lisbon": 1, "tram": 1}
    assert {f["value"] for f in facets["years"]} >= {"2019", "2021"}


def test_a_cursor_of_a_version_no_longer_served_is_a_410(tmp_path, tiny_encoder):
    images, index = tmp_path / "images", tmp_path / "index"
    write_corpus(images, [f"{n}.png" for n in range(6)])
    build(images, index, tiny_encoder)
    with running_service(index_dir=index) as service:
        service.wait_ready()
        cursor = service.client.post("/search/text", json={"text": "x", "k": 2}).json()["next_cursor"]
        write_corpus(images, ["new.png"], first_seed=50)
        build(images, index, tiny_encoder)
        service.wait_until(lambda: service.client.get("/info").json().get("index_version") == "0002")
        gone = service.client.post("/search/text", json={"text": "x", "k": 2, "cursor": cursor})
        assert gone.status_code == 410 and "0001" in gone.json()["detail"]


def test_a_heic_photo_is_thumbnailed_and_served_like_a_jpeg(served):
    (result,) = text(served, filter={"formats": ["heic"]}).json()["results"]
    thumb = served.client.get(f"/thumbs/{result['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert served.client.get(result["url"]).content == (served.root / "images" / result["path"]).read_bytes()
