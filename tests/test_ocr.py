"""Text inside pictures (--ocr): read into each record and the keyword channel, found over HTTP, read once per file.

Skipped where the OCR extra (`clipspace[ocr]`) is not installed; CI installs it. Refusing --ocr without the extra is
checked everywhere, with the extra hidden from a child process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from clipspace.align.signs import read_pictures, write_signs
from clipspace.index.publish import open_current
from index_builder import files
from tests.conftest import ROOT, TINY_ARCH, build, running_service

SEED = 19


def records_by_path(index_dir):
    return {record.path: record for record, _, _ in open_current(index_dir).items()}


def read_in(word: str, text: str) -> bool:
    """Whether OCR read `word`: a Latin word as a word of the text, a Chinese one anywhere in it (OCR drops the
    spaces between Chinese words)."""
    if re.search(r"[\u4e00-\u9fff]", word):
        return word in re.sub(r"\s", "", text)
    return word.casefold() in re.findall(r"[^\W_]+", text.casefold())


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    """Four kinds of pictures with words (sign, label, receipt, slide), in English and in Chinese, and a blank."""
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR extra: pip install 'clipspace[ocr]'")
    images = tmp_path_factory.mktemp("ocr") / "images"
    pictures = read_pictures(write_signs(images / "signs", 8, SEED))
    Image.new("RGB", (320, 200), (200, 210, 220)).save(images / "blank.png")
    return images, pictures


@pytest.fixture(scope="module")
def indexed(signs, tiny_encoder, tmp_path_factory):
    images, _ = signs
    index = tmp_path_factory.mktemp("ocr-index") / "index"
    report = build(images, index, tiny_encoder, ocr=True)
    return index, report


def test_the_builder_reads_the_words_of_rendered_signs_in_english_and_chinese(signs, indexed):
    _, pictures = signs
    index, report = indexed
    records = records_by_path(index)
    assert {picture.language for picture in pictures} == {"en", "zh"}
    read = [read_in(word, records[f"signs/{picture.file}"].ocr_text) for picture in pictures for word in picture.words]
    assert sum(read) / len(read) >= 0.9, {path: record.ocr_text for path, record in records.items()}
    assert (report.texts_read, report.texts_found) == (9, 8)


def test_a_picture_without_text_is_recorded_as_read_and_empty_and_one_built_without_ocr_as_unknown(
        signs, indexed, tiny_encoder, tmp_path):
    images, _ = signs
    assert records_by_path(indexed[0])["blank.png"].ocr_text == ""
    build(images, tmp_path / "plain", tiny_encoder)
    assert {record.ocr_text for record in records_by_path(tmp_path / "plain").values()} == {None}


def test_a_reindex_with_nothing_changed_runs_no_ocr_and_keeps_the_text(signs, indexed, tiny_encoder, tmp_path):
    images, _ = signs
    shutil.copytree(indexed[0], tmp_path / "index")
    before = records_by_path(tmp_path / "index")
    report = build(images, tmp_path / "index", tiny_encoder, ocr=True)
    assert (report.read, report.texts_read) == (0, 0)
    assert records_by_path(tmp_path / "index") == before


def test_a_file_read_again_keeps_its_text_without_running_ocr(signs, indexed, tiny_encoder, tmp_path):
    images, _ = signs
    shutil.copytree(indexed[0], tmp_path / "index")
    before = records_by_path(tmp_path / "index")
    report = build(images, tmp_path / "index", tiny_encoder, ocr=True, verify=True)
    assert (report.read, report.texts_read) == (9, 0)
    assert records_by_path(tmp_path / "index") == before


def test_ocr_asked_of_an_index_built_without_it_reads_each_picture_once_and_keeps_its_vector(
        signs, tiny_encoder, tmp_path):
    images, _ = signs
    build(images, tmp_path / "index", tiny_encoder)
    first = build(images, tmp_path / "index", tiny_encoder, ocr=True)
    again = build(images, tmp_path / "index", tiny_encoder, ocr=True)
    assert (first.texts_read, first.reused, first.added) == (9, 9, 0)
    assert (again.read, again.texts_read) == (0, 0)


def test_a_picture_decoded_again_for_its_text_gains_the_colour_layout_an_older_build_did_not_store(
        signs, tiny_encoder, tmp_path, monkeypatch):
    images, _ = signs
    monkeypatch.setattr(files, "colour_layout", lambda image: None)  # a builder from before layouts
    build(images, tmp_path / "index", tiny_encoder)
    assert all(record.layout is None for record in records_by_path(tmp_path / "index").values())
    monkeypatch.undo()
    build(images, tmp_path / "index", tiny_encoder, ocr=True)
    assert all(record.layout for record in records_by_path(tmp_path / "index").values())


def test_a_keyword_query_for_a_rendered_word_finds_its_picture_first_with_its_text(signs, indexed):
    _, pictures = signs
    english = next(picture for picture in pictures if picture.language == "en" and picture.kind == "sign")
    chinese = next(picture for picture in pictures if picture.language == "zh" and picture.kind == "sign")
    with running_service(index_dir=indexed[0]) as service:
        service.wait_ready()
        for picture in (english, chinese):
            answer = service.client.post("/search/text", json={"text": picture.words[0], "mode": "keyword", "k": 5})
            assert answer.status_code == 200, answer.text
            first = answer.json()["results"][0]
            assert first["path"] == f"signs/{picture.file}", answer.json()
            assert first["channel"] == "keyword" and read_in(picture.words[0], first["ocr_text"])


def test_ocr_without_the_extra_is_a_usage_error_before_anything_is_embedded(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    hidden = ("import sys; sys.modules['rapidocr_onnxruntime'] = None; from index_builder.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", hidden, "--images", str(tmp_path / "images"), "--index",
                           str(tmp_path / "index"), "--model", TINY_ARCH, "--pretrained", "none", "--ocr"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "clipspace[ocr]" in done.stderr
    assert not (tmp_path / "index").exists()
