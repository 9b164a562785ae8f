"""The pictures with known words (clipspace.align.signs): seeded, listed, and photographs with a phone's metadata."""

from __future__ import annotations

import hashlib

from clipspace.align.signs import KINDS, LANGUAGES, VOCABULARY, read_pictures, write_signs
from clipspace.images import load_image
from clipspace.photos import read_photo_facts


def digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_no_word_of_the_vocabulary_is_inside_another_nor_a_kind_so_one_word_names_one_picture():
    for words in VOCABULARY.values():
        assert len(set(words)) == len(words)
        assert not [(inner, outer) for inner in words for outer in words if inner != outer and inner in outer]
    assert not set(KINDS) & set(VOCABULARY["en"])


def test_the_same_seed_writes_the_same_pictures_and_words(tmp_path):
    write_signs(tmp_path / "a", 8, seed=3)
    write_signs(tmp_path / "b", 8, seed=3)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")


def test_every_kind_in_both_languages_is_listed_with_distinct_words(tmp_path):
    pictures = read_pictures(write_signs(tmp_path, 8, seed=3))
    assert {(picture.kind, picture.language) for picture in pictures} == {(k, la) for k in KINDS for la in LANGUAGES}
    words = [word for picture in pictures for word in picture.words]
    assert len(words) == len(set(words))
    assert all((tmp_path / picture.file).is_file() for picture in pictures)


def test_photographs_carry_a_phones_time_camera_place_and_keywords_and_slides_none(tmp_path):
    pictures = {picture.kind: picture for picture in read_pictures(write_signs(tmp_path, 4, seed=3))}
    sign = read_photo_facts(load_image(tmp_path / pictures["sign"].file), mtime_ns=0)
    slide = read_photo_facts(load_image(tmp_path / pictures["slide"].file), mtime_ns=0)
    assert sign.taken_at_source == "exif" and sign.camera and sign.lat is not None and "sign" in sign.tags
    assert (slide.format, slide.taken_at_source, slide.camera, slide.tags) == ("PNG", "mtime", None, ())
