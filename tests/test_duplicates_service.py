"""Duplicate groups over HTTP (a real uvicorn, the embedded model): built with the index, kept on reindex,
listed by GET /duplicates, collapsed in searches."""

from __future__ import annotations

import io
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from clipspace import settings
from clipspace.align.world import render_scene, sample_scene
from clipspace.index import duplicates, writer
from clipspace.index.publish import VERSIONS, current_version_name, open_current
from tests.conftest import ROOT, build, running_service

EMBEDDED_MODEL = f"local-dir:{ROOT / settings.EMBEDDED_MODEL.removeprefix('local-dir:')}"
SIZE = 192
# Scenes of the demo world with other objects each: distinct pictures to the embedded model.
OTHERS = range(10, 30)
GROUP_A = {"a/original.jpg", "a/copy.jpg", "a/resized.jpg", "a/recompressed.jpg", "a/cropped.jpg", "a/rotated.jpg",
           "a/recoloured.jpg", "a/later.jpg"}
GROUP_B = {"b/original.jpg", "b/copy.jpg"}
ITEMS = len(GROUP_A) + len(GROUP_B) + len(OTHERS) + 2  # and the look-alike, the confusable


def jpeg(image: Image.Image, quality: int = 90, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def write_library(images: Path) -> None:
    """Scene A eight times (a byte copy, resized, recompressed, cropped, turned through EXIF, recoloured, a moment
    later), its look-alike (one object recoloured) and its confusable (the same shapes in the same places on another
    background: cosine 0.999 to the embedded model), scene B twice, and unrelated scenes once each."""
    scene_a = sample_scene(0, "all", 3)
    first, *rest = scene_a.objects
    lookalike = replace(scene_a, objects=(replace(first, colour="blue" if first.colour != "blue" else "red"), *rest))
    confusable = replace(scene_a, background=sample_scene(0, "all", 50).background, noise_seed=50)
    picture_a = render_scene(scene_a, SIZE)
    picture_b = render_scene(sample_scene(0, "all", 5), SIZE)
    exif = Image.Exif()
    exif[0x0112] = 6  # the orientation tag: the stored pixels are turned, a viewer (and the loader) turns them back
    recoloured = ImageEnhance.Brightness(ImageEnhance.Color(picture_a).enhance(1.2)).enhance(0.9)
    files = {"a/original.jpg": jpeg(picture_a), "a/copy.jpg": jpeg(picture_a),
             "a/resized.jpg": jpeg(picture_a.resize((SIZE // 2, SIZE // 2))),
             "a/recompressed.jpg": jpeg(picture_a, quality=30),
             "a/cropped.jpg": jpeg(picture_a.crop((10, 6, 186, 182))),
             "a/rotated.jpg": jpeg(picture_a.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()),
             "a/recoloured.jpg": jpeg(recoloured),
             "a/later.jpg": jpeg(render_scene(replace(scene_a, noise_seed=12345), SIZE)),
             "lookalike.jpg": jpeg(render_scene(lookalike, SIZE)),
             "confusable.jpg": jpeg(render_scene(confusable, SIZE)),
             "b/original.jpg": jpeg(picture_b), "b/copy.jpg": jpeg(picture_b)}
    files.update({f"other/{n:02d}.jpg": jpeg(render_scene(sample_scene(0, "all", n), SIZE)) for n in OTHERS})
    for name, data in files.items():
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedded):
    root = tmp_path_factory.mktemp("duplicates")
    write_library(root / "images")
    build(root / "images", root / "index", embedded)
    with running_service(index_dir=root / "index") as service:
        service.wait_ready()
        service.root = root
        yield service


def groups_by_path(service, k: int = 100) -> list[set[str]]:
    answer = service.client.get("/duplicates", params={"k": k})
    assert answer.status_code == 200, answer.text
    return [{item["path"] for item in group["items"]} for group in answer.json()["groups"]]


def ids_of(service, paths: set[str]) -> set[int]:
    found = service.client.post("/search/text", json={"text": "shapes", "k": 100, "mode": "vector"}).json()
    return {result["id"] for result in found["results"] if result["path"] in paths}


def test_near_duplicates_are_grouped_and_neither_the_look_alike_nor_the_other_background_is(served):
    assert groups_by_path(served) == [GROUP_A, GROUP_B]


def test_the_picture_on_another_background_is_one_the_vectors_alone_would_have_grouped(served):
    confusable = ids_of(served, {"confusable.jpg"}).pop()
    answer = served.client.post("/search", json={"terms": [{"image_id": confusable}], "k": 12}).json()
    scores = {result["path"]: result["score"] for result in answer["results"]}
    assert scores["a/original.jpg"] >= duplicates.THRESHOLD


def test_duplicates_pages_largest_first_with_the_search_cursor(served):
    first = served.client.get("/duplicates", params={"k": 1}).json()
    assert first["total_groups"] == 2
    assert [group["size"] for group in first["groups"]] == [len(GROUP_A)]
    item = first["groups"][0]["items"][0]
    assert item["url"] == f"/images/{item['id']}" and item["thumb_url"] == f"/thumbs/{item['id']}"
    second = served.client.get("/duplicates", params={"k": 1, "cursor": first["next_cursor"]}).json()
    assert {item["path"] for item in second["groups"][0]["items"]} == GROUP_B
    assert second["next_cursor"] is None


def test_a_forged_or_foreign_cursor_on_duplicates_is_a_400(served):
    assert served.client.get("/duplicates", params={"cursor": "nonsense.cursor"}).status_code == 400
    search = served.client.post("/search/text", json={"text": "a red triangle", "k": 1, "mode": "vector"}).json()
    answer = served.client.get("/duplicates", params={"cursor": search["next_cursor"]})
    assert answer.status_code == 400 and "another query" in answer.json()["detail"]
    assert served.client.get("/duplicates", params={"k": 0}).status_code == 422


def test_a_collapsed_search_shows_each_group_once_and_lists_the_ids_it_stands_for(served):
    group_a = ids_of(served, GROUP_A)
    query = {"terms": [{"image_id": min(group_a)}], "k": 10}
    collapsed = served.client.post("/search", json={**query, "collapse_duplicates": True}).json()["results"]
    from_a = [result for result in collapsed if result["id"] in group_a]
    assert len(from_a) == 1
    assert from_a[0] is collapsed[0]
    assert set(from_a[0]["duplicates"]) == group_a - {from_a[0]["id"]}
    assert all(result["duplicates"] == [] for result in collapsed if result["id"] not in group_a | ids_of(
        served, GROUP_B))
    plain = served.client.post("/search", json=query).json()["results"]
    assert {result["id"] for result in plain} >= group_a
    assert all(result.get("duplicates") is None for result in plain)


def test_a_collapsed_walk_gives_every_distinct_picture_once_and_full_pages(served):
    body = {"text": "a large red triangle", "k": 3, "mode": "vector", "collapse_duplicates": True}
    seen, cursor, pages = [], None, 0
    while True:
        answer = served.client.post("/search/text", json={**body, "cursor": cursor}).json()
        seen += [result["id"] for result in answer["results"]]
        pages += 1
        cursor = answer["next_cursor"]
        if cursor is None:
            break
        assert len(answer["results"]) == 3
    distinct = 1 + 20 + 1 + 1 + 1  # group A, the others, the look-alike, the confusable, group B
    assert len(seen) == len(set(seen)) == distinct
    assert pages == -(-distinct // 3)


def test_an_uploaded_image_search_collapses_too(served):
    data = (served.root / "images" / "a" / "original.jpg").read_bytes()
    answer = served.client.post("/search/image", params={"k": 5, "collapse_duplicates": "true"},
                                files={"file": ("a.jpg", data, "image/jpeg")}).json()
    assert len(answer["results"][0]["duplicates"]) == len(GROUP_A) - 1
    assert answer["results"][1]["path"] not in GROUP_A


def test_a_reindex_puts_a_new_copy_into_its_group_and_a_deleted_item_leaves_it_and_keeps_every_layout(tmp_path,
                                                                                                    embedded):
    images, index = tmp_path / "images", tmp_path / "index"
    write_library(images)
    build(images, index, embedded)
    with running_service(index_dir=index) as service:
        service.wait_ready()
        before = service.client.get("/duplicates", params={"k": 1}).json()
        (images / "b" / "another-copy.jpg").write_bytes((images / "b" / "original.jpg").read_bytes())
        (images / "a" / "copy.jpg").unlink()
        (images / "other" / "10.jpg").rename(images / "other" / "moved.jpg")  # its vector and layout are reused
        report = build(images, index, embedded)
        service.wait_until(lambda: service.client.get("/duplicates").json()["index_version"] != before["index_version"])
        assert groups_by_path(service) == [GROUP_A - {"a/copy.jpg"}, GROUP_B | {"b/another-copy.jpg"}]
        stale = service.client.get("/duplicates", params={"k": 1, "cursor": before["next_cursor"]})
        assert stale.status_code == 410
    assert (report.added, report.moved) == (1, 1)
    version = open_current(index)
    assert version.manifest.build_report["duplicates"]["unchanged_items"] == ITEMS - 2  # the new copy, the moved
    version.close()
    meta = sqlite3.connect(index / VERSIONS / current_version_name(index) / "meta.sqlite")
    assert meta.execute("SELECT count(*) FROM items WHERE layout IS NULL").fetchone()[0] == 0


def test_a_version_built_before_groups_serves_without_groups(tmp_path, embedded, monkeypatch):
    images, index = tmp_path / "images", tmp_path / "index"
    write_library(images)
    monkeypatch.setattr(writer, "write_groups", lambda db, groups: None)  # what an older builder wrote
    build(images, index, embedded)
    with running_service(index_dir=index) as service:
        service.wait_ready()
        listed = service.client.get("/duplicates").json()
        assert (listed["total_groups"], listed["groups"], listed["next_cursor"]) == (0, [], None)
        answer = service.client.post("/search/text", json={"text": "a red triangle", "k": 40, "mode": "vector",
                                                           "collapse_duplicates": True}).json()
        assert len(answer["results"]) == ITEMS  # every item: none is collapsed
        assert all(result["duplicates"] == [] for result in answer["results"])
    monkeypatch.undo()
    build(images, index, embedded)  # the next build groups everything
    meta = sqlite3.connect(index / VERSIONS / current_version_name(index) / "meta.sqlite")
    assert meta.execute("SELECT count(*) FROM duplicates").fetchone()[0] == len(GROUP_A | GROUP_B)
