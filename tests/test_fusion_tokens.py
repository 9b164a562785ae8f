"""The tokens a matcher reads, from a ViT and from a convolutional (ModifiedResNet) image tower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipspace.align import world
from clipspace.align.export import export_local_dir
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.fusion.rerank import find_reranker
from clipspace.fusion.tokens import image_tokens, preprocess_images
from clipspace.fusion.train import MatcherOptions, train_matchers
from tests.conftest import TINY_ARCH
from tests.test_fusion_rerank import TINY_MATCHER

TINY_RESNET = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("resnet")
    (folder / "tiny-resnet.json").write_text(json.dumps(TINY_RESNET))
    encoder = load_encoder(ModelSpec(str(folder / "tiny-resnet.json"), "none", "fp32", seed=0))
    export_local_dir(encoder.model, TINY_RESNET, encoder.preprocess_cfg, folder / "model")
    return f"local-dir:{folder / 'model'}"


def scenes(n: int) -> list:
    return [world.render_scene(world.sample_scene(0, "test", index)) for index in range(n)]


@pytest.mark.parametrize("model, tokens, width", [(TINY_ARCH, 1 + 16, 32), ("resnet", 1 + 16, 8 * 16)],
                         ids=["vit", "resnet"])
def test_image_tokens_are_a_summary_then_one_per_patch_or_cell_with_the_indexed_embedding(
        model: str, tokens: int, width: int, tiny_resnet: str) -> None:
    encoder = load_encoder(ModelSpec(tiny_resnet if model == "resnet" else model, "none", "fp32", seed=0))
    images = scenes(3)
    out = image_tokens(encoder, preprocess_images(encoder, images))
    assert out.patches.shape == (3, tokens, width)
    assert np.allclose(out.pooled.numpy(), encoder.embed_images(images), atol=1e-5)
    if model == "resnet":  # cells normalised over channels; their mean stands in for the class token
        cells = out.patches[:, 1:]
        assert torch.allclose(cells.mean(dim=-1), torch.zeros(3, 16), atol=1e-4)
        assert torch.allclose(out.patches[:, 0], cells.mean(dim=1), atol=1e-5)


def test_a_matcher_trained_on_a_convolutional_towers_cells_reranks_its_images(tiny_resnet: str) -> None:
    train_matchers(MatcherOptions(model=tiny_resnet, **TINY_MATCHER), progress=False)
    encoder = load_encoder(ModelSpec(tiny_resnet))
    reranker, why = find_reranker(encoder)
    assert reranker is not None, why
    assert reranker.token_shape == (1 + 16, 8 * 16)
    scores = reranker.score(["a red circle"], [1.0], scenes(4), np.zeros(4))
    assert scores.shape == (4,) and np.isfinite(scores).all() and len(set(scores.tolist())) > 1
