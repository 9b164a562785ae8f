"""What the builder records from photo files (capture time, camera, place, keywords, format), and how it reuses it."""

from __future__ import annotations

import shutil

import pytest
from pillow_heif import register_heif_opener

from clipspace.align.photo_metadata import camera_exif, xmp_packet
from clipspace.index.publish import open_current
from tests.conftest import ROOT, build, make_image, write_corpus
from tests.photo_files import LISBON, write

register_heif_opener()


def records_by_path(index_dir):
    return {record.path: record for record, _, _ in open_current(index_dir).items()}


@pytest.fixture
def photos(tmp_path):
    images = tmp_path / "images"
    (images / "trip").mkdir(parents=True)
    write(images / "trip" / "tram.jpg", exif=camera_exif(gps=LISBON), xmp=xmp_packet("Lisbon", "tram"))
    write(images / "trip" / "phone.heic", "HEIF", exif=camera_exif(model="Pixel 8", offset=None).tobytes())
    write(images / "plain.png", "PNG")
    return images


def test_the_builder_records_capture_time_camera_place_and_keywords(tmp_path, photos, tiny_encoder):
    build(photos, tmp_path / "index", tiny_encoder)
    facts = records_by_path(tmp_path / "index")["trip/tram.jpg"].facts
    assert (facts.format, facts.taken_at, facts.taken_at_source) == ("JPEG", "2021-07-04T15:30:00+01:00", "exif")
    assert (facts.camera, facts.lat, facts.lon) == ("Google Pixel 8", pytest.approx(38.7083333), pytest.approx(-9.14))
    assert facts.tags == ("Lisbon", "tram")


def test_a_heic_photo_is_indexed_like_a_jpeg(tmp_path, photos, tiny_encoder):
    report = build(photos, tmp_path / "index", tiny_encoder)
    facts = records_by_path(tmp_path / "index")["trip/phone.heic"].facts
    assert report.added == 3 and report.skipped_count == 0
    assert (facts.format, facts.taken_at, facts.camera) == ("HEIF", "2021-07-04T15:30:00", "Google Pixel 8")


def test_a_picture_without_metadata_is_dated_by_its_mtime(tmp_path, photos, tiny_encoder):
    build(photos, tmp_path / "index", tiny_encoder)
    facts = records_by_path(tmp_path / "index")["plain.png"].facts
    assert (facts.format, facts.taken_at_source, facts.camera, facts.tags) == ("PNG", "mtime", None, ())
    assert facts.taken_at == "2023-11-14T22:13:20+00:00"


def test_a_reindex_with_nothing_changed_reads_no_file_and_keeps_the_metadata(tmp_path, photos, tiny_encoder):
    build(photos, tmp_path / "index", tiny_encoder)
    before = records_by_path(tmp_path / "index")
    report = build(photos, tmp_path / "index", tiny_encoder)
    assert (report.read, report.reused) == (0, 3)
    assert records_by_path(tmp_path / "index") == before


def test_a_moved_photo_keeps_its_vector_and_has_its_metadata_read_again(tmp_path, photos, tiny_encoder):
    build(photos, tmp_path / "index", tiny_encoder)
    (photos / "kept").mkdir()
    shutil.move(photos / "trip" / "tram.jpg", photos / "kept" / "tram.jpg")
    report = build(photos, tmp_path / "index", tiny_encoder)
    assert (report.moved, report.added) == (1, 0)
    assert records_by_path(tmp_path / "index")["kept/tram.jpg"].facts.tags == ("Lisbon", "tram")


def test_a_reindex_over_an_index_built_before_photo_metadata_reads_each_file_once_for_it(tmp_path, tiny_encoder):
    shutil.copytree(ROOT / "tests" / "assets" / "format1-index", tmp_path / "index")
    write_corpus(tmp_path / "images", ["img/1.png"])
    assert records_by_path(tmp_path / "index")["img/1.png"].facts.format is None  # it opens, facts unknown
    report = build(tmp_path / "images", tmp_path / "index", tiny_encoder)
    assert report.read == 1
    assert records_by_path(tmp_path / "index")["img/1.png"].facts.format == "PNG"


def test_files_that_are_not_images_are_counted_by_extension_and_captions_are_not(tmp_path, tiny_encoder):
    images = tmp_path / "images"
    write_corpus(images, ["a.jpg", "b.png"])
    (images / "a.txt").write_text("a caption")
    for name in ("clip.mov", "other.mov", "scan.pdf", "README"):
        (images / name).write_bytes(b"not an image")
    make_image(3).save(images / "raw.bmp")
    report = build(images, tmp_path / "index", tiny_encoder)
    assert report.not_images == {".mov": 2, ".pdf": 1, "(no extension)": 1}
    assert open_current(tmp_path / "index").manifest.build_report["not_images"] == report.not_images
