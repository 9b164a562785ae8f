"""Patch tokens cached in the index version: written for a model with a matcher, reused on reindex, read by rerank."""

from __future__ import annotations

import numpy as np
import pytest

from clipspace.encoder import ModelSpec, load_encoder
from clipspace.fusion.rerank import find_reranker
from clipspace.images import load_image
from clipspace.index.publish import open_current
from tests.conftest import TINY_ARCH, build, running_service
from tests.test_fusion_rerank import model_with_matcher, scenes_with_twins, write_scenes


@pytest.fixture(scope="module")
def matched(tmp_path_factory):
    """A tiny local-dir model with a matcher, its encoder, and 12 world scenes with captions."""
    root = tmp_path_factory.mktemp("tokens")
    encoder = load_encoder(ModelSpec(model_with_matcher(root)))
    reranker, _ = find_reranker(encoder)
    return root, encoder, reranker


def test_a_model_with_a_matcher_keeps_every_images_patch_tokens(matched, tmp_path):
    root, encoder, reranker = matched
    build(root / "images", tmp_path / "index", encoder)
    version = open_current(tmp_path / "index")
    assert version.token_shape == reranker.token_shape
    tokens = version.patch_tokens([item.id for item, _, _ in version.items()])
    assert len(tokens) == version.count == 12
    assert all(t.shape == reranker.token_shape and t.dtype == np.float16 for t in tokens.values())


def test_cached_tokens_score_as_the_recomputed_ones_and_vectors_are_unchanged(matched, tmp_path):
    root, encoder, reranker = matched
    build(root / "images", tmp_path / "cached", encoder)
    build(root / "images", tmp_path / "plain", encoder, patch_tokens=False)
    cached, plain = open_current(tmp_path / "cached"), open_current(tmp_path / "plain")
    assert plain.token_shape is None and plain.patch_tokens([0, 1]) == {}
    # one forward pass gives vectors and tokens: the vectors are those of the plain path
    np.testing.assert_allclose(np.asarray(cached.image_vectors()), np.asarray(plain.image_vectors()), atol=1e-5)
    items = [item for item, _, _ in cached.items()]
    images = [load_image(root / "images" / item.path, draft_size=encoder.image_size) for item in items]
    cosines = np.linspace(0.2, 0.3, len(items))
    texts, weights = ["a red circle on the left and a blue square on the right"], [1.0]
    recomputed = reranker.score(texts, weights, images, cosines)
    stored = cached.patch_tokens([item.id for item in items])
    from_cache = reranker.score_patches(texts, weights, np.stack([stored[item.id] for item in items]), cosines)
    np.testing.assert_allclose(from_cache, recomputed, atol=0.05)  # float16 tokens: ~1e-3 relative
    assert np.argsort(-from_cache).tolist()[:3] == np.argsort(-recomputed).tolist()[:3]


def test_reindex_reuses_tokens_with_vectors_and_embeds_again_a_version_without_them(matched, tmp_path):
    root, encoder, _ = matched
    build(root / "images", tmp_path / "index", encoder, patch_tokens=False)
    again = build(root / "images", tmp_path / "index", encoder)
    assert again.reused == 0 and again.updated == 12
    assert "no patch tokens" in again.full_reembed_reason
    first = open_current(tmp_path / "index")
    before = first.patch_tokens(list(range(12)))
    (root / "images" / "extra.png").write_bytes((root / "images" / "000.png").read_bytes())
    try:
        third = build(root / "images", tmp_path / "index", encoder)
    finally:
        (root / "images" / "extra.png").unlink()
    assert third.reused == 12 and third.added == 1
    after = open_current(tmp_path / "index")
    tokens = after.patch_tokens(list(range(13)))
    assert all(np.array_equal(tokens[item_id], before[item_id]) for item_id in range(12))
    ids = {item.path: item.id for item, _, _ in after.items()}
    np.testing.assert_allclose(tokens[ids["extra.png"]].astype(np.float32),
                               tokens[ids["000.png"]].astype(np.float32), atol=1e-2)


def test_a_model_without_a_matcher_keeps_no_tokens(tmp_path):
    write_scenes(tmp_path / "images", scenes_with_twins(2, 7))
    build(tmp_path / "images", tmp_path / "index", load_encoder(ModelSpec(TINY_ARCH, "none", "fp32")))
    assert open_current(tmp_path / "index").token_shape is None


def test_rerank_reads_cached_tokens_even_when_the_files_are_gone(matched, tmp_path):
    _, encoder, _ = matched
    images = tmp_path / "images"
    write_scenes(images, scenes_with_twins(6, 5))
    build(images, tmp_path / "index", encoder)
    with running_service(index_dir=tmp_path / "index") as service:
        service.wait_ready()
        query = {"terms": [{"text": "a red circle on the left"}], "rerank": True, "k": 5}
        before = service.client.post("/search", json=query).json()["results"]
        for path in images.glob("*.png"):
            path.unlink()
        after = service.client.post("/search", json=query)
        assert after.status_code == 200
        assert [(r["id"], r["rerank_score"]) for r in after.json()["results"]] == \
            [(r["id"], r["rerank_score"]) for r in before]
