"""The one model loader: every open_clip source, normalised vectors, and an identity that proves the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipspace.align.export import architecture_config, export_local_dir
from clipspace.encoder import ModelSpec, load_encoder, trimmed_text_encoder
from clipspace.errors import ModelLoadError
from tests.conftest import TINY_ARCH, make_image


def test_embeddings_are_unit_float32_rows(tiny_encoder):
    texts = tiny_encoder.embed_texts(["a red circle", "一个红色的圆形"])
    images = tiny_encoder.embed_images([make_image(1), make_image(2), make_image(3)])
    for vectors, rows in ((texts, 2), (images, 3)):
        assert vectors.dtype == np.float32 and vectors.shape == (rows, tiny_encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_text_longer_than_the_context_is_truncated_not_an_error(tiny_encoder):
    long_text = "a red circle beside a blue square " * 200
    prefix = " ".join(long_text.split()[:60])  # already past the tiny model's 32-token context
    np.testing.assert_allclose(tiny_encoder.embed_texts([long_text]), tiny_encoder.embed_texts([prefix]),
                               atol=1e-6)


def test_random_weights_are_seeded_so_builder_and_service_agree(tiny_spec, tiny_encoder):
    again = load_encoder(tiny_spec)
    other_seed = load_encoder(ModelSpec(TINY_ARCH, "none", "fp32", seed=1))
    assert again.fingerprint == tiny_encoder.fingerprint
    assert other_seed.fingerprint != tiny_encoder.fingerprint
    np.testing.assert_array_equal(again.embed_texts(["x"]), tiny_encoder.embed_texts(["x"]))


def test_bf16_model_stays_close_to_fp32(tiny_encoder):
    bf16 = load_encoder(ModelSpec(TINY_ARCH, "none", "bf16"))
    images = [make_image(seed) for seed in range(4)]
    cosine = (bf16.embed_images(images) * tiny_encoder.embed_images(images)).sum(axis=1)
    assert cosine.min() > 0.99
    assert bf16.fingerprint == tiny_encoder.fingerprint  # same weights; precision is recorded separately
    assert bf16.identity.precision == "bf16"


def test_local_dir_export_loads_the_identical_model(tmp_path, tiny_encoder):
    export_local_dir(tiny_encoder.model, architecture_config(TINY_ARCH), tiny_encoder.preprocess_cfg,
                     tmp_path / "tiny")
    loaded = load_encoder(ModelSpec(f"local-dir:{tmp_path / 'tiny'}"))
    assert loaded.fingerprint == tiny_encoder.fingerprint
    images = [make_image(7)]
    np.testing.assert_array_equal(loaded.embed_images(images), tiny_encoder.embed_images(images))
    np.testing.assert_array_equal(loaded.embed_texts(["一个圆"]), tiny_encoder.embed_texts(["一个圆"]))


def test_checkpoint_path_as_pretrained_loads_those_weights(tmp_path, tiny_encoder):
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny_encoder.model.state_dict()}, checkpoint)
    loaded = load_encoder(ModelSpec(TINY_ARCH, str(checkpoint), seed=12345))
    assert loaded.fingerprint == tiny_encoder.fingerprint


def test_unknown_models_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no-such-arch"):
        load_encoder(ModelSpec("no-such-arch"))
    with pytest.raises(ModelLoadError, match="local-dir"):
        load_encoder(ModelSpec(f"local-dir:{tmp_path / 'missing'}"))
    with pytest.raises(ModelLoadError, match="laion"):
        load_encoder(ModelSpec(TINY_ARCH, "laion2b_s34b_b79k"))  # not a tag of this architecture


def test_a_text_tower_from_a_missing_package_says_what_to_install(tmp_path):
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1},
              "text_cfg": {"hf_model_name": "package:no_such_text_tower_package", "hf_pooler_type": "mean_pooler"}}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    with pytest.raises(ModelLoadError, match=r"no_such_text_tower_package.*pip install"):
        load_encoder(ModelSpec(f"local-dir:{tmp_path / 'model'}"))


def test_precision_must_be_one_we_support():
    with pytest.raises(ValueError, match="precision"):
        ModelSpec(TINY_ARCH, precision="fp16")


TEXTS = ["a red circle", "一只猫", "a small blue square to the left of a large green triangle", "x " * 100, "a"]


def full_length_text_vectors(encoder, texts: list[str]) -> np.ndarray:
    """open_clip's own encode_text over every position of the context: the path trimming must reproduce."""
    with torch.inference_mode():
        features = encoder.model.encode_text(encoder.tokenizer(texts))
    return torch.nn.functional.normalize(features.float(), dim=-1).numpy()


def test_clip_text_towers_are_trimmed_to_the_longest_text_of_the_batch(tiny_encoder):
    assert trimmed_text_encoder(tiny_encoder.model) is not None


def test_trimmed_text_vectors_equal_the_full_context_ones_in_fp32(tiny_encoder):
    cosine = (tiny_encoder.embed_texts(TEXTS) * full_length_text_vectors(tiny_encoder, TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.99999


def test_trimmed_text_vectors_stay_within_bf16_rounding_in_bf16(tiny_encoder):
    """Trimming may change bf16 results only as much as bf16 itself changes fp32 ones (summation order)."""
    bf16 = load_encoder(ModelSpec(TINY_ARCH, "none", "bf16"))
    trim_error = 1 - (bf16.embed_texts(TEXTS) * full_length_text_vectors(bf16, TEXTS)).sum(axis=1)
    bf16_error = 1 - (full_length_text_vectors(bf16, TEXTS) * full_length_text_vectors(tiny_encoder, TEXTS)).sum(axis=1)
    assert trim_error.max() <= max(bf16_error.max(), 1e-5)


def test_text_vectors_come_back_in_input_order_whatever_their_lengths(tiny_encoder):
    one_by_one = np.concatenate([tiny_encoder.embed_texts([text]) for text in TEXTS])
    np.testing.assert_allclose(tiny_encoder.embed_texts(TEXTS, batch_size=2), one_by_one, atol=1e-5)


def test_a_text_tower_without_a_causal_mask_keeps_the_full_path(tiny_spec):
    bidirectional = load_encoder(tiny_spec).model
    bidirectional.attn_mask = None
    assert trimmed_text_encoder(bidirectional) is None
