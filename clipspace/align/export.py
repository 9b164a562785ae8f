"""Write a trained model in open_clip's `local-dir:` layout, so it loads like any model from a hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file

from clipspace import packaged_towers
from clipspace.encoder import CONFIG_FILE, WEIGHTS_FILE, ModelSpec, load_encoder

_STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def architecture_config(model: str) -> dict[str, Any]:
    """The open_clip model_cfg behind a model reference: an architecture JSON, a built-in name or local-dir:."""
    if model.endswith(".json") and not model.startswith(("hf-hub:", "local-dir:")):
        config = json.loads(Path(model).read_text(encoding="utf-8"))
        return config.get("model_cfg", config)
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"no open_clip architecture config for {model!r}")
    return config


def export_local_dir(model: torch.nn.Module, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any],
                     out: Path, storage: str = "fp32") -> str:
    """Write open_clip_config.json + open_clip_model.safetensors into `out`; returns the `local-dir:` name.

    `storage="fp16"` halves the file; open_clip casts the weights back to the model's fp32 parameters on load.
    A text tower named by a package and left exactly as the package ships it is not written (`packaged_towers`).
    """
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    dtype = _STORAGE_DTYPES[storage]
    state = packaged_towers.drop_package_text(model, model_cfg, model.state_dict())
    weights = {name: tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()
               for name, tensor in state.items()}
    save_file(weights, out / WEIGHTS_FILE, metadata={"format": "pt"})
    _copy_hf_tokenizer(model_cfg, out)
    return f"local-dir:{out}"


# What a Hugging Face tokenizer folder holds; the model's own config and weights stay where they are.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def _copy_hf_tokenizer(model_cfg: dict[str, Any], out: Path) -> None:
    """open_clip loads a `local-dir:` model's Hugging Face tokenizer from that folder, never from
    `hf_tokenizer_name`: a model whose HF tokenizer is a folder path carries a copy of its files. (A tokenizer
    named by its package, as LiT's MiniLM is, comes from the package where the model is loaded.)"""
    source = Path(model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") or "")
    if not (str(source) and source.is_dir()):
        return
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def export_checkpoint(checkpoint: Path, out: Path, storage: str = "fp32") -> str:
    """Export a training checkpoint (e.g. an interrupted run's last epoch) without training further."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model_name = saved["options"]["model"]
    encoder = load_encoder(ModelSpec(model_name, saved["options"]["pretrained"]))
    encoder.model.load_state_dict(saved["model"])
    return export_local_dir(encoder.model, architecture_config(model_name), encoder.preprocess_cfg, out, storage)
