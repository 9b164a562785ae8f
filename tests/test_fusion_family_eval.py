"""Matchers trained across caption families, and fusion-eval's per-family table on held-out renders (tiny runs)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from clipspace.align import heldout, world
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.fusion.beside import MATCHER_FILE
from clipspace.fusion.evaluate import EvalOptions, fusion_report, render_report
from clipspace.fusion.features import twin_features
from clipspace.fusion.matcher import CrossAttentionMatcher, MatcherConfig, load_scorer, save_scorer
from clipspace.fusion.phrasings import FAMILIES, caption, is_negative
from clipspace.fusion.train import MatcherOptions, train_matchers
from clipspace.fusion.twins import KINDS, MAKERS
from tests.conftest import TINY_ARCH

TINY_FAMILIES = {"scenes": 24, "val_scenes": 8, "steps": 4, "mlp_steps": 4, "batch_size": 8, "width": 32,
                 "heads": 2, "layers": 1, "warmup_steps": 2, "families": True, "randomised": 0.5, "image_pool": 2,
                 "dedupe": True}
TINY_EVAL = EvalOptions(composed_gallery=40, composed_queries=4, classify_scenes=6, binding_pairs=6,
                        gallery_scenes=6, family_scenes=10)


@pytest.fixture(scope="module")
def family_report(tmp_path_factory):
    """A tiny random model's matchers trained on caption families, and fusion-eval's report on them."""
    out = tmp_path_factory.mktemp("family-matcher")
    train_matchers(MatcherOptions(model=TINY_ARCH, pretrained="none", out=str(out), **TINY_FAMILIES), progress=False)
    encoder = load_encoder(ModelSpec(TINY_ARCH, "none", "fp32"))
    return out, encoder, fusion_report(encoder, out, TINY_EVAL, progress=False)


def test_fusion_eval_prints_a_row_per_caption_family_with_three_scorers_in_each_cell(family_report):
    _, _, report = family_report
    table = render_report(report)
    assert "Caption families on held-out renders" in table
    for family in FAMILIES:
        row = next(line for line in table.splitlines() if line.startswith(f"| {family} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 6  # family, pairs, binding en / zh, R@1 en / zh
        assert all(len(cell.split(" / ")) == 3 for cell in cells[2:])


def test_each_family_is_scored_on_twins_it_can_tell_apart(family_report):
    _, _, report = family_report
    for family, row in report["phrasing"]["families"].items():
        assert row["pairs"] > 0
        allowed = {kind for kind in FAMILIES[family].kinds if kind != "count_change" or family == "counts"}
        assert set(row["kinds"]) <= allowed
        for scorer in ("cosine", "concat-mlp", "cross-attention"):
            assert 0 <= row["binding_accuracy"][scorer]["en"] <= 1


def test_a_pooled_matcher_reads_every_stored_token_and_attends_to_fewer(family_report):
    out, encoder, _ = family_report
    matcher = load_scorer(out / MATCHER_FILE, encoder.fingerprint)
    assert matcher.config.image_tokens == 17  # what the index stores for the tiny ViT: class token + 4x4 patches
    assert matcher.image_position.shape[0] == 1 + 2 * 2
    logits = matcher(torch.randn(3, 17, matcher.config.image_width), torch.randn(3, 5, matcher.config.text_width),
                     torch.ones(3, 5, dtype=torch.bool))
    assert logits.shape == (3,)


def test_a_matcher_saved_before_pooling_existed_loads_and_reads_every_token(tmp_path):
    config = MatcherConfig("cross-attention", "fp", image_width=8, image_tokens=10, text_width=8, width=16, heads=2,
                           layers=1)
    path = save_scorer(CrossAttentionMatcher(config), tmp_path / MATCHER_FILE)
    old = {key: value for key, value in asdict(config).items() if key != "image_pool"}
    save_file(load_file(path), path, metadata={"config": json.dumps(old), "card": "{}"})
    assert load_scorer(path, "fp").image_position.shape[0] == 10


def test_embedding_each_distinct_image_once_gives_the_same_logits():
    torch.manual_seed(0)
    matcher = CrossAttentionMatcher(MatcherConfig("cross-attention", "fp", image_width=8, image_tokens=10,
                                                  text_width=8, width=16, heads=2, layers=1, image_pool=3)).eval()
    images, rows = torch.randn(2, 10, 8), torch.tensor([0, 1, 0, 1, 1])
    states, mask = torch.randn(5, 4, 8), torch.ones(5, 4, dtype=torch.bool)
    torch.testing.assert_close(matcher(images, states, mask, rows), matcher(images[rows], states, mask))


def test_training_pairs_are_captioned_in_a_family_where_the_twin_is_a_negative(tiny_encoder):
    pairs = twin_features(tiny_encoder, 30, 11, "train", progress=False, families=True)
    assert len(set(pairs.families)) > 3
    captions = pairs.captions("en")
    for i, (scene, other, kind, family) in enumerate(zip(pairs.scenes, pairs.twins, pairs.kinds, pairs.families,
                                                         strict=True)):
        assert is_negative(scene, other, kind, family)
        assert (captions[i], captions[pairs.n + i]) == (caption(scene, family, "en"), caption(other, family, "en"))


def test_the_held_out_renderer_draws_a_scene_and_its_twin_alike_but_for_the_change():
    rng = np.random.default_rng(0)
    scene = next(s for i in range(50) if len((s := world.sample_scene(7001, "test", i)).objects) == 2)
    for kind in KINDS:
        twin = MAKERS[kind](scene, rng)
        if twin is None:
            continue
        drawn, drawn_twin = heldout.picture_of_scene(scene), heldout.picture_of_scene(twin)
        assert [o.as_scene_object() for o in drawn.objects] == list(scene.objects)
        assert [o.as_scene_object() for o in drawn_twin.objects] == list(twin.objects)
        assert (drawn.style, drawn.size, drawn.background) == (drawn_twin.style, drawn_twin.size, "flat")


def test_a_second_stage_starts_from_the_first_stages_matcher(family_report, tmp_path):
    first, _, _ = family_report
    still = dict(TINY_FAMILIES, steps=1, lr=1e-12, warmup_steps=1, swap_share=0.8)  # one step that moves nothing
    train_matchers(MatcherOptions(model=TINY_ARCH, pretrained="none", out=str(tmp_path),
                                  init=str(first / MATCHER_FILE), **still), progress=False)
    before, after = load_file(first / MATCHER_FILE), load_file(tmp_path / MATCHER_FILE)
    for name, weights in before.items():
        torch.testing.assert_close(after[name], weights, rtol=0, atol=1e-6)


def test_a_matcher_of_another_shape_cannot_start_a_run(family_report, tmp_path):
    first, _, _ = family_report
    wider = dict(TINY_FAMILIES, width=48)
    with pytest.raises(ValueError, match="another shape"):
        train_matchers(MatcherOptions(model=TINY_ARCH, pretrained="none", out=str(tmp_path),
                                      init=str(first / MATCHER_FILE), **wider), progress=False)


def test_a_missing_first_stage_is_named_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="no matcher to start from"):
        train_matchers(MatcherOptions(model=TINY_ARCH, pretrained="none", out=str(tmp_path),
                                      init=str(tmp_path / "missing.safetensors"), **TINY_FAMILIES), progress=False)
