"""Training: the loss goes down, checkpoints resume exactly, and local-dir exports embed like the trained model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from clipspace.align import train as train_module
from clipspace.align import world
from clipspace.align.datasets import PairedShuffle, WorldOptions, WorldPairs, read_pairs, shifted
from clipspace.align.export import export_checkpoint
from clipspace.align.train import (
    CHECKPOINT_FILE,
    FrozenTextFeatures,
    TrainOptions,
    lock_text_tower,
    text_features_by_length,
    train,
)
from clipspace.cli import main
from clipspace.encoder import ModelSpec, load_encoder, trimmed_text_encoder
from clipspace.images import load_image

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 100, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_options(tmp_path_factory: pytest.TempPathFactory) -> TrainOptions:
    folder = tmp_path_factory.mktemp("align")
    arch = folder / "tiny-align.json"
    arch.write_text(json.dumps(TINY_ARCH))
    return TrainOptions(model=str(arch), world=WorldOptions(scenes=64, val_scenes=32), batch_size=16, epochs=2,
                        lr=3e-3, warmup_steps=2, out=str(folder / "run"), threads=2)


@pytest.fixture(scope="module")
def trained(tiny_options: TrainOptions) -> Path:
    """One short run whose checkpoint several tests read."""
    train(tiny_options)
    return Path(tiny_options.out) / CHECKPOINT_FILE


@pytest.mark.parametrize("world_options", [
    {}, {"shape_twins": True, "shift": 2, "randomised_share": 0.5, "caption_language": "en"},
], ids=["canonical", "twins-shifted-randomised-english"])
def test_training_a_few_steps_lowers_the_loss(tiny_options: TrainOptions, tmp_path: Path, world_options: dict) -> None:
    world_options = replace(tiny_options.world, **world_options)
    result = train(replace(tiny_options, epochs=5, out=str(tmp_path), world=world_options))
    assert result.epoch_losses[-1] < result.epoch_losses[0] - 0.1
    assert {"text_to_image_R@5", "image_to_text_R@5", "attribute"} <= set(result.metrics)


def test_channels_last_training_takes_the_same_steps_and_exports_a_loadable_model(tiny_options: TrainOptions,
                                                                                  tmp_path: Path) -> None:
    resnet = tmp_path / "tiny-rn.json"  # convolutions all the way: where the memory format matters
    resnet.write_text(json.dumps({**TINY_ARCH, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8,
                                                                "head_width": 8}}))
    options = replace(tiny_options, model=str(resnet))
    plain = train(replace(options, out=str(tmp_path / "plain")))
    nhwc = train(replace(options, out=str(tmp_path / "nhwc"), channels_last=True, export=str(tmp_path / "model")))
    assert nhwc.epoch_losses == pytest.approx(plain.epoch_losses, abs=1e-3)
    exported = load_encoder(ModelSpec(f"local-dir:{tmp_path / 'model'}"))
    assert exported.embed_texts(["a red circle"]).shape == (1, exported.dim)


def test_a_bf16_image_tower_trains_like_fp32_and_exports_fp32_weights(tiny_options: TrainOptions,
                                                                     tmp_path: Path) -> None:
    options = replace(tiny_options, epochs=5)
    plain = train(replace(options, out=str(tmp_path / "plain")))
    mixed = train(replace(options, out=str(tmp_path / "bf16"), image_bf16=True, export=str(tmp_path / "model")))
    assert mixed.epoch_losses != plain.epoch_losses, "the image tower should have run in bf16"
    assert mixed.epoch_losses == pytest.approx(plain.epoch_losses, rel=0.05)
    assert mixed.epoch_losses[-1] < mixed.epoch_losses[0]
    exported = load_encoder(ModelSpec(f"local-dir:{tmp_path / 'model'}", precision="fp32"))
    assert next(exported.model.visual.parameters()).dtype == torch.float32
    assert exported.embed_images([world.render_scene(world.sample_scene(0, "test", 0))]).shape == (1, exported.dim)


def test_locking_the_image_tower_trains_only_the_text_side(tiny_options: TrainOptions, tmp_path: Path) -> None:
    train(replace(tiny_options, epochs=1, lock_image=True, out=str(tmp_path)))
    before = load_encoder(ModelSpec(tiny_options.model, seed=tiny_options.seed)).model.state_dict()
    after = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["model"]
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("visual."))
    assert not torch.equal(before["text_projection"], after["text_projection"])


def test_a_checkpoint_exported_to_local_dir_embeds_exactly_like_the_trained_weights(trained: Path,
                                                                                   tmp_path: Path) -> None:
    checkpoint = torch.load(trained, weights_only=False)
    from_training = load_encoder(ModelSpec(checkpoint["options"]["model"]))
    from_training.model.load_state_dict(checkpoint["model"])
    exported = load_encoder(ModelSpec(export_checkpoint(trained, tmp_path / "model")))

    texts = ["a red circle", "一个红色的圆形", world.canonical_caption(world.sample_scene(0, "test", 0))]
    images = [world.render_scene(world.sample_scene(0, "test", i)) for i in range(4)]
    np.testing.assert_array_equal(exported.embed_texts(texts), from_training.embed_texts(texts))
    np.testing.assert_array_equal(exported.embed_images(images), from_training.embed_images(images))
    assert open_clip.get_tokenizer(f"local-dir:{tmp_path / 'model'}").context_length == 100


def test_an_fp16_export_stays_within_cosine_0_999_of_fp32(trained: Path, tmp_path: Path) -> None:
    full = load_encoder(ModelSpec(export_checkpoint(trained, tmp_path / "fp32")))
    half = load_encoder(ModelSpec(export_checkpoint(trained, tmp_path / "fp16", storage="fp16")))
    texts = ["a red circle", "两个蓝色的正方形", "a large green star on the left"]
    images = [world.render_scene(world.sample_scene(0, "test", i)) for i in range(4)]
    assert (full.embed_texts(texts) * half.embed_texts(texts)).sum(axis=1).min() > 0.999
    assert (full.embed_images(images) * half.embed_images(images)).sum(axis=1).min() > 0.999


def test_resuming_after_a_crash_reproduces_the_uninterrupted_run(tiny_options: TrainOptions, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    options = replace(tiny_options, epochs=3)
    train(replace(options, out=str(tmp_path / "straight")))

    evaluate = train_module.evaluate_model
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint, before epoch 2's
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_model", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(replace(options, out=str(tmp_path / "crashed")))
    monkeypatch.setattr(train_module, "evaluate_model", evaluate)
    resumed = train(replace(options, out=str(tmp_path / "crashed"),
                            resume=str(tmp_path / "crashed" / CHECKPOINT_FILE)))

    assert len(resumed.epoch_losses) == 2  # epochs 2 and 3 only
    straight = torch.load(tmp_path / "straight" / CHECKPOINT_FILE, weights_only=False)
    continued = torch.load(tmp_path / "crashed" / CHECKPOINT_FILE, weights_only=False)
    assert continued["epoch"] == straight["epoch"] == 2
    assert continued["step"] == straight["step"] == 3 * (64 // 16)
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, continued["model"][name]), name


def test_training_reads_caption_sidecars_and_csv_manifests(tiny_options: TrainOptions, tmp_path: Path) -> None:
    world.write_world(tmp_path / "corpus", n=40, seed=3, split="train", size=64)
    (tmp_path / "corpus" / "captions.jsonl").unlink()  # leave a plain folder of x.png + x.txt
    sidecars = read_pairs(tmp_path / "corpus")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("path,caption\n" + "".join(f"corpus/{p.path.name},\"{p.caption}\"\n" for p in sidecars))
    assert [(p.path.resolve(), p.caption) for p in read_pairs(manifest)] == [(p.path, p.caption) for p in sidecars]
    assert load_image(sidecars[0].path).size == (64, 64)

    result = train(replace(tiny_options, data=str(manifest), batch_size=8, epochs=1, out=str(tmp_path / "run")))
    assert result.metrics["images"] == 2  # 5% of 40 held out for validation


def test_eval_command_scores_an_exported_model_on_a_world_folder(trained: Path, tmp_path: Path) -> None:
    model = export_checkpoint(trained, tmp_path / "model")
    world.write_world(tmp_path / "test", n=30, seed=11, split="test")
    report_path = tmp_path / "report.json"
    assert main(["eval", "--model", model, "--data", str(tmp_path / "test"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))["data"][str(tmp_path / "test")]
    assert report["images"] == 30
    assert 0.0 <= report["text_to_image_R@5"] <= 1.0
    assert set(report["attribute"]) == {"en", "zh"}


def test_world_pairs_show_the_randomised_look_only_from_its_epoch_on_and_in_its_share() -> None:
    scenes = [world.sample_scene(0, "train", i) for i in range(400)]
    canonical = torch.zeros(400, 3, 4, 4, dtype=torch.uint8)
    randomised = torch.full((400, 3, 4, 4), 255, dtype=torch.uint8)
    pairs = WorldPairs(scenes, canonical, lambda pixels: pixels, lambda texts: torch.zeros(len(texts), 1), seed=0,
                       randomised=randomised, options=WorldOptions(randomised_share=0.75, randomise_from_epoch=2))

    def randomised_share(epoch: int) -> float:
        pairs.set_epoch(epoch)
        return float(np.mean([pairs[i][0].mean().item() == 1.0 for i in range(len(pairs))]))

    assert randomised_share(0) == randomised_share(1) == 0.0
    assert 0.68 < randomised_share(2) < 0.82


def test_eval_command_asks_heldout_pictures_and_paraphrases_in_their_own_words(trained: Path, tmp_path: Path) -> None:
    model = export_checkpoint(trained, tmp_path / "model")
    world.write_world(tmp_path / "test", n=20, seed=11, split="test")
    assert main(["heldout", "--out", str(tmp_path / "heldout"), "--n", "20", "--seed", "12"]) == 0
    report_path = tmp_path / "report.json"
    assert main(["eval", "--model", model, "--heldout", str(tmp_path / "heldout"),
                 "--paraphrase", str(tmp_path / "test"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert "data" not in report
    heldout_worst = report["heldout"][str(tmp_path / "heldout")]["attribute"]["en"]["worst_query"]
    paraphrase_worst = report["paraphrase"][str(tmp_path / "test")]["attribute"]["zh"]["worst_query"]
    assert heldout_worst.startswith(("the ", "a picture with "))
    assert paraphrase_worst.startswith("一个") and paraphrase_worst not in {
        world.attribute_query(c, s, "zh") for c in world.COLOURS for s in world.SHAPES}


def test_eval_command_without_anything_to_score_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "ViT-B-32"]) == 2
    assert "nothing to score" in capsys.readouterr().err


def test_a_shift_moves_the_picture_and_repeats_its_border() -> None:
    pixels = torch.arange(2 * 6 * 6, dtype=torch.uint8).reshape(2, 6, 6)
    moved = shifted(pixels, 2, -1)  # two down, one left
    assert torch.equal(moved[:, 2:, :5], pixels[:, :4, 1:])
    assert torch.equal(moved[:, 0], moved[:, 1]) and torch.equal(moved[:, 1], pixels[:, 0, [1, 2, 3, 4, 5, 5]])
    assert torch.equal(moved[:, :, 5], moved[:, :, 4])
    assert torch.equal(shifted(pixels, 0, 0), pixels)


def test_world_pairs_shift_each_sample_anew_every_epoch_within_the_bound() -> None:
    scenes = [world.sample_scene(0, "train", i) for i in range(50)]
    pixels = torch.zeros(50, 1, 9, 9, dtype=torch.uint8)
    pixels[:, :, 4, 4] = 255  # one bright dot in the centre: where it lands is the shift
    pairs = WorldPairs(scenes, pixels, lambda image: image, lambda texts: torch.zeros(len(texts), 1), seed=0,
                       options=WorldOptions(shift=2))

    def dot_offsets(epoch: int) -> list[tuple[int, int]]:
        pairs.set_epoch(epoch)
        return [tuple((torch.nonzero(pairs[i][0][0]) - 4).flatten().tolist()) for i in range(len(pairs))]

    first, second = dot_offsets(0), dot_offsets(1)
    assert all(max(abs(down), abs(right)) <= 2 for down, right in first + second)
    assert len(set(first)) > 10 and first != second
    assert dot_offsets(0) == first  # reproducible: the shift depends on (seed, epoch, index) only


def test_the_text_tower_split_by_length_gives_the_full_paths_features_and_gradients() -> None:
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_ARCH)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    rng = np.random.default_rng(0)
    captions = [world.sample_caption(world.sample_scene(0, "train", i), rng) for i in range(64)]
    tokens = tokenizer(captions, context_length=TINY_ARCH["text_cfg"]["context_length"])
    lengths = (tokens != 0).sum(dim=-1)
    assert lengths.max() > 2 * lengths.float().median()  # the batch this exists for: mostly short, some long

    full = model.encode_text(tokens)
    full.square().sum().backward()
    full_grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    model.zero_grad()
    split = text_features_by_length(model, trimmed_text_encoder(model), tokens)
    split.square().sum().backward()

    assert torch.allclose(split, full, atol=1e-5)
    for name, grad in full_grads.items():  # float32 sums in another order: equal to ~1e-7 of the gradient's norm
        difference = (model.get_parameter(name).grad - grad).norm() / grad.norm().clamp_min(1e-12)
        assert difference < 1e-5, (name, float(difference))


def test_a_paired_shuffle_keeps_every_twin_in_its_partners_batch() -> None:
    order = list(PairedShuffle(41, torch.Generator().manual_seed(3)))
    assert sorted(order) == list(range(41))
    assert all({order[i], order[i + 1]} == {order[i], order[i] ^ 1} for i in range(0, 40, 2))
    assert order != list(range(41))


def test_a_locked_text_towers_features_are_computed_once_per_caption_and_equal_the_towers() -> None:
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_ARCH).train()
    assert not FrozenTextFeatures.applies(model)
    model.lock_text_tower()
    assert FrozenTextFeatures.applies(model)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer(["a red circle", "a blue square", "a red circle", "两个绿色的星形"], context_length=100)
    calls = []
    model.encode_text = lambda batch, real=model.encode_text: calls.append(len(batch)) or real(batch)
    features = FrozenTextFeatures(model)
    first = features(tokens)
    again = features(tokens[[1, 0]])
    assert calls == [3]  # three distinct captions, each run once
    assert model.transformer.training  # run in eval mode, then given back in training mode
    model.eval()
    with torch.no_grad():
        expected = open_clip.model.CLIP.encode_text(model, tokens)
    assert torch.allclose(first, expected, atol=1e-6) and torch.equal(again, first[[1, 0]])


def test_a_text_tower_with_unlocked_layers_is_run_every_step_at_its_own_rate() -> None:
    model = open_clip.model.CLIP(**TINY_ARCH).train()
    lock_text_tower(model, 1)
    assert not FrozenTextFeatures.applies(model)  # its vectors change: nothing may be cached
    assert not model.token_embedding.weight.requires_grad  # below the unlocked layer: still locked
    text = {id(param) for param in train_module._text_parameters(model) if param.requires_grad}
    groups = train_module._parameter_groups(model, 0.1, text_lr_scale=0.5)
    assert text and {id(param) for group in groups if group["lr_scale"] == 0.5 for param in group["params"]} == text
    assert all(group["lr_scale"] == 1.0 for group in train_module._parameter_groups(model, 0.1))
    assert len(train_module._parameter_groups(model, 0.1)) == 2  # decayed or not, as before the option


def test_unlocking_text_layers_without_locking_the_text_tower_is_refused(tiny_options: TrainOptions,
                                                                         tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock_text"):
        train(replace(tiny_options, text_unlocked_layers=1, out=str(tmp_path)))


def test_training_with_a_locked_text_tower_leaves_it_untouched(tiny_options: TrainOptions, tmp_path: Path) -> None:
    result = train(replace(tiny_options, epochs=2, lock_text=True, out=str(tmp_path)))
    before = load_encoder(ModelSpec(tiny_options.model, seed=tiny_options.seed)).model.state_dict()
    after = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["model"]
    text = [name for name in before if not name.startswith(("visual.", "logit_"))]
    assert text and all(torch.equal(before[name], after[name]) for name in text)
    assert not torch.equal(before["visual.proj"], after["visual.proj"])
    assert result.epoch_losses[-1] < result.epoch_losses[0]
