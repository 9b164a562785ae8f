"""The builder's image tower on OpenVINO: torch's vectors from a cached conversion, and torch whenever it fails."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from clipspace import openvino_images
from clipspace.encoder import DualEncoder, load_encoder
from clipspace.identity import ModelSpec
from clipspace.index.publish import open_current
from clipspace.openvino_images import OpenVinoImageEncoder, builder_encoder, openvino_folder
from index_builder.cli import main as build_cli
from tests.conftest import TINY_ARCH, build, write_corpus

pytest.importorskip("openvino")

# Both paths run the same bf16 weights; they differ in the order of accumulation and where intermediate results are
# rounded to bf16 (OpenVINO fuses layer norms, GELU and attention and rounds once per fused op). bf16 keeps 8 bits of
# mantissa, so a vector moves by ~1e-3 relative at worst: cosine 0.999 is the builder's own bar (MIN_COSINE), and in
# fp32, where nothing is rounded to bf16, the two agree to float rounding.
BF16_COSINE = 0.999
FP32_COSINE = 0.99999


@pytest.fixture(scope="module")
def bf16_encoder() -> DualEncoder:
    return load_encoder(ModelSpec(TINY_ARCH, "none", "bf16"))


@pytest.fixture(scope="module")
def converted(bf16_encoder, tmp_path_factory) -> tuple[OpenVinoImageEncoder, object]:
    index = tmp_path_factory.mktemp("index")
    encoder = builder_encoder(bf16_encoder, index, "openvino")
    assert isinstance(encoder, OpenVinoImageEncoder)
    return encoder, index


def test_openvino_images_are_torch_bf16_images_within_bf16_rounding(bf16_encoder, converted):
    pixels = torch.rand(7, 3, bf16_encoder.image_size, bf16_encoder.image_size)
    cosines = np.einsum("ij,ij->i", bf16_encoder.embed_pixels(pixels), converted[0].embed_pixels(pixels))
    assert cosines.min() >= BF16_COSINE


def test_openvino_in_fp32_agrees_with_torch_to_float_rounding(tiny_encoder, tmp_path):
    encoder = builder_encoder(tiny_encoder, tmp_path, "openvino")
    pixels = torch.rand(3, 3, tiny_encoder.image_size, tiny_encoder.image_size)
    assert np.einsum("ij,ij->i", tiny_encoder.embed_pixels(pixels), encoder.embed_pixels(pixels)).min() >= FP32_COSINE


def test_a_build_embeds_on_openvino_with_texts_and_identity_of_torch(bf16_encoder, converted, tmp_path):
    images = tmp_path / "images"
    write_corpus(images, ["a.jpg", "b.png", "c.jpg"])
    build(images, tmp_path / "on-torch", bf16_encoder)
    build(images, tmp_path / "on-openvino", converted[0])
    on_torch, on_openvino = open_current(tmp_path / "on-torch"), open_current(tmp_path / "on-openvino")
    try:
        assert on_openvino.model == on_torch.model  # same model, same precision: the vectors are interchangeable
        cosines = np.einsum("ij,ij->i", on_torch.image_vectors()[:3], on_openvino.image_vectors()[:3])
        assert cosines.min() >= BF16_COSINE
    finally:
        on_torch.close()
        on_openvino.close()


def test_the_conversion_is_cached_beside_the_index_and_reused(bf16_encoder, converted, monkeypatch):
    monkeypatch.setattr(openvino_images, "_convert", lambda *_: pytest.fail("converted again"))
    assert (openvino_folder(converted[1], bf16_encoder) / openvino_images.MODEL_FILE).is_file()
    assert isinstance(builder_encoder(bf16_encoder, converted[1], "auto", large_build=False), OpenVinoImageEncoder)


def test_auto_stays_on_torch_for_a_small_first_build_and_torch_means_torch(bf16_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(openvino_images, "_convert", lambda *_: pytest.fail("converted for a small build"))
    assert builder_encoder(bf16_encoder, tmp_path, "auto", large_build=False) is bf16_encoder
    assert builder_encoder(bf16_encoder, tmp_path, "torch") is bf16_encoder


def test_a_refused_conversion_is_logged_and_the_build_succeeds_on_torch(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(openvino_images, "MIN_COSINE", 1.01)  # no conversion can pass: the verification refuses it
    images = tmp_path / "images"
    write_corpus(images, ["a.jpg", "b.jpg"])
    with caplog.at_level(logging.WARNING, logger="clipspace.openvino_images"):
        code = build_cli(["--images", str(images), "--index", str(tmp_path / "index"), "--model", TINY_ARCH,
                          "--pretrained", "none", "--precision", "bf16", "--image-runtime", "openvino", "--quiet"])
    assert code == 0
    assert "images embedded on torch, not OpenVINO" in caplog.text and "differ from torch's" in caplog.text
    assert not list((tmp_path / "index" / "runtimes").glob("openvino-*"))  # nothing refused is kept
    version = open_current(tmp_path / "index")
    try:
        assert version.count == 2
    finally:
        version.close()
