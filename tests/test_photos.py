"""Photo facts: capture time, camera, place and keywords from files written here, read as the builder will."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from clipspace.align.photo_metadata import camera_exif, xmp_packet
from clipspace.images import load_image
from clipspace.photos import TAKEN_AT_SOURCES, PhotoFacts, read_photo_facts
from tests.conftest import make_image
from tests.photo_files import LISBON, iptc_segment, write


def facts_of(path: Path) -> PhotoFacts:
    """What the builder records: the facts of the image load_image decoded for embedding, and the file's mtime."""
    return read_photo_facts(load_image(path), mtime_ns=path.stat().st_mtime_ns)


def test_a_jpeg_photo_is_read_with_its_capture_time_offset_camera_and_place(tmp_path):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(gps=LISBON)))
    assert facts.format == "JPEG"
    assert (facts.taken_at, facts.taken_at_source) == ("2021-07-04T15:30:00+01:00", "exif")
    assert (facts.camera_make, facts.camera_model, facts.camera) == ("Google", "Pixel 8", "Google Pixel 8")
    assert (facts.lat, facts.lon) == (pytest.approx(38.7083333), pytest.approx(-9.14))


def test_facts_are_the_same_from_the_opened_file_and_from_the_image_the_loader_returned(tmp_path):
    path = write(tmp_path / "a.jpg", exif=camera_exif(gps=LISBON), xmp=xmp_packet("beach"), extra=iptc_segment("sea"))
    with Image.open(path) as opened:
        assert read_photo_facts(opened, mtime_ns=0) == read_photo_facts(load_image(path), mtime_ns=0)


def test_a_capture_time_without_offset_is_kept_as_the_camera_wrote_it(tmp_path):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(offset=None)))
    assert (facts.taken_at, facts.taken_at_source) == ("2021-07-04T15:30:00", "exif")


@pytest.mark.parametrize("offset", ["+25:00", "01:00", "garbage", ""])
def test_a_bad_offset_leaves_the_capture_time_as_written(tmp_path, offset):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(offset=offset)))
    assert (facts.taken_at, facts.taken_at_source) == ("2021-07-04T15:30:00", "exif")


def test_a_photo_without_metadata_is_dated_by_its_file_mtime_in_utc(tmp_path):
    facts = facts_of(write(tmp_path / "a.png", "PNG"))
    assert facts == PhotoFacts(format="PNG", taken_at="2023-11-14T22:13:20+00:00", taken_at_source="mtime")


@pytest.mark.parametrize("taken", ["0000:00:00 00:00:00", "    :  :     :  :  ", "2021:13:40 25:00:00", "yesterday"])
def test_an_unusable_capture_time_falls_back_to_the_mtime(tmp_path, taken):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(taken=taken)))
    assert (facts.taken_at, facts.taken_at_source) == ("2023-11-14T22:13:20+00:00", "mtime")
    assert facts.camera == "Google Pixel 8"


def test_every_capture_time_starts_with_its_wall_clock_so_filters_compare_it_as_text(tmp_path):
    times = [facts_of(write(tmp_path / name, exif=camera_exif(offset=offset))).taken_at
             for name, offset in (("a.jpg", "+01:00"), ("b.jpg", None))]
    times.append(facts_of(write(tmp_path / "c.png", "PNG")).taken_at)
    assert [time[:19] for time in times] == ["2021-07-04T15:30:00", "2021-07-04T15:30:00", "2023-11-14T22:13:20"]
    assert set(TAKEN_AT_SOURCES) == {"exif", "mtime"}


@pytest.mark.parametrize(("make", "model", "camera"), [
    ("Google", "Pixel 8", "Google Pixel 8"),
    ("Apple", "iPhone 15 Pro", "Apple iPhone 15 Pro"),
    ("Canon", "Canon EOS R5", "Canon EOS R5"),
    ("NIKON CORPORATION", "NIKON D750", "NIKON D750"),
    ("FUJIFILM", None, "FUJIFILM"),
    (None, "X100V", "X100V"),
    (None, None, None),
])
def test_the_camera_is_named_without_repeating_its_make(make, model, camera):
    facts = PhotoFacts(format="JPEG", taken_at=None, taken_at_source=None, camera_make=make, camera_model=model)
    assert facts.camera == camera


def test_camera_names_are_stripped_of_nuls_and_blanks(tmp_path):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(make="Canon\x00\x00  ", model="  Canon EOS R5\x00")))
    assert (facts.camera_make, facts.camera_model, facts.camera) == ("Canon", "Canon EOS R5", "Canon EOS R5")


def test_southern_and_eastern_positions_have_their_signs(tmp_path):
    sydney = {1: "S", 2: (33.0, 52.0, 4.0), 3: "E", 4: (151.0, 12.0, 36.0)}
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(gps=sydney)))
    assert (facts.lat, facts.lon) == (pytest.approx(-33.8677778), pytest.approx(151.21))


def test_a_gps_position_with_zero_denominators_is_unknown_and_costs_nothing_else(tmp_path):
    zero = (IFDRational(38, 0), IFDRational(42, 0), IFDRational(30, 0))
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(gps={**LISBON, 2: zero})))
    assert (facts.lat, facts.lon) == (None, None)
    assert (facts.taken_at, facts.camera) == ("2021-07-04T15:30:00+01:00", "Google Pixel 8")


@pytest.mark.parametrize("gps", [
    {**LISBON, 2: (95.0, 0.0, 0.0)},  # beyond the pole
    {**LISBON, 4: (9.0, 75.0, 0.0)},  # 75 minutes
    {**LISBON, 1: "X"},  # no hemisphere
    {1: "N", 2: (38.0, 42.0, 30.0)},  # half a position
    {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)},  # what a receiver without a fix writes
])
def test_impossible_or_half_positions_are_unknown(tmp_path, gps):
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(gps=gps)))
    assert (facts.lat, facts.lon) == (None, None)


def test_xmp_keywords_become_tags_in_their_order(tmp_path):
    facts = facts_of(write(tmp_path / "a.jpg", xmp=xmp_packet("beach", "Lisbon & sea", "café", "海滩")))
    assert facts.tags == ("beach", "Lisbon & sea", "café", "海滩")


def test_iptc_keywords_follow_the_xmp_ones_without_duplicates(tmp_path):
    facts = facts_of(write(tmp_path / "a.jpg", xmp=xmp_packet("beach", "sunset"),
                           extra=iptc_segment("Beach", "family", "Ünïcödé")))
    assert facts.tags == ("beach", "sunset", "family", "Ünïcödé")


def test_a_heic_photo_is_read_with_its_capture_time_and_camera(tmp_path):
    exif = camera_exif(make="Apple", model="iPhone 15 Pro", offset="-07:00", gps=LISBON)
    facts = facts_of(write(tmp_path / "a.heic", "HEIF", exif=exif.tobytes(), xmp=xmp_packet("hike")))
    assert facts.format == "HEIF"
    assert (facts.taken_at, facts.taken_at_source) == ("2021-07-04T15:30:00-07:00", "exif")
    assert facts.camera == "Apple iPhone 15 Pro"
    assert (facts.lat, facts.lon, facts.tags) == (pytest.approx(38.7083333), pytest.approx(-9.14), ("hike",))


def test_an_avif_photo_is_read_with_its_capture_time_and_camera(tmp_path):
    facts = facts_of(write(tmp_path / "a.avif", "AVIF", exif=camera_exif(offset=None), xmp=xmp_packet("city")))
    assert facts.format == "AVIF"
    assert (facts.taken_at, facts.camera, facts.tags) == ("2021-07-04T15:30:00", "Google Pixel 8", ("city",))


def test_a_multi_picture_jpeg_is_recorded_as_a_jpeg(tmp_path):
    path = tmp_path / "stereo.jpg"
    make_image(1, size=(64, 48)).save(path, "MPO", save_all=True, append_images=[make_image(2, size=(64, 48))])
    assert facts_of(path).format == "JPEG"


@pytest.mark.filterwarnings("ignore:Truncated File Read", "ignore:Corrupt EXIF data")  # Pillow says so, rightly
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_exif_block_costs_only_what_it_held(tmp_path, damage):
    whole = camera_exif(gps=LISBON).tobytes()
    exif = b"Exif\x00\x00" + os.urandom(200) if damage == "garbage" else whole[:len(whole) // 2]
    facts = facts_of(write(tmp_path / "a.jpg", exif=exif, xmp=xmp_packet("beach")))
    assert facts.format == "JPEG" and facts.tags == ("beach",)
    assert facts.taken_at_source in TAKEN_AT_SOURCES and facts.taken_at is not None
    assert (facts.lat, facts.lon) == (None, None)  # the GPS IFD lies beyond the cut


def test_a_malformed_xmp_packet_costs_only_its_tags(tmp_path):
    broken = xmp_packet("beach").replace(b"</rdf:Bag>", b"")
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(), xmp=broken, extra=iptc_segment("family")))
    assert facts.tags == ("family",)
    assert (facts.taken_at, facts.camera) == ("2021-07-04T15:30:00+01:00", "Google Pixel 8")


def test_an_xmp_packet_with_a_doctype_is_not_parsed(tmp_path):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
            + xmp_packet("ENTITY").replace(b"ENTITY", b"&b;").split(b"?>", 1)[1])
    assert facts_of(write(tmp_path / "a.jpg", xmp=bomb)).tags == ()


def test_a_damaged_iptc_block_costs_only_its_keywords(tmp_path):
    segment = iptc_segment("family")
    cut = segment[:-3]
    damaged = cut[:2] + (len(cut) - 2).to_bytes(2, "big") + cut[4:]
    facts = facts_of(write(tmp_path / "a.jpg", exif=camera_exif(), extra=damaged))
    assert facts.camera == "Google Pixel 8" and facts.tags == ()


def test_photo_facts_are_plain_values_for_the_index_records(tmp_path):
    path = write(tmp_path / "a.jpg", exif=camera_exif(gps=LISBON), xmp=xmp_packet("beach"))
    record = dataclasses.asdict(facts_of(path))
    assert all(value is None or type(value) in (str, int, float) for key, value in record.items() if key != "tags")
    assert type(record["tags"]) is tuple and all(type(tag) is str for tag in record["tags"])
