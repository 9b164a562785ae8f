"""What lives beside a model's weights (or beside an index, for any model) for fusion, and how deep re-ranking reads:
facts the service needs without importing torch (the matcher itself runs on torch, clipspace.fusion.rerank)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from clipspace.identity import ModelSpec

MATCHER_FILE = "matcher.safetensors"
MATCHERS_DIR = "matchers"  # in an index folder: one subfolder per model (its weights' fingerprint)
CONCAT_FILE = "concat-mlp.safetensors"
RERANK_DEPTH = 50  # candidates re-scored per query: the dual encoder's top 50 (measured in fusion-eval)


class _HasSpec(Protocol):
    spec: ModelSpec


class _HasFingerprint(Protocol):
    spec: ModelSpec
    fingerprint: str


def model_folder(encoder: _HasSpec) -> Path | None:
    """The folder of a `local-dir:` model, where its matcher lives beside its weights."""
    model = encoder.spec.model
    return Path(model.removeprefix("local-dir:")) if model.startswith("local-dir:") else None


def index_matcher_folder(index_dir: Path, fingerprint: str) -> Path:
    """Where `matcher --corpus` puts the matcher of the model with these weights, beside the index it serves: any
    open_clip model has one, where only a local-dir: model has a folder of its own to keep it in."""
    return Path(index_dir) / MATCHERS_DIR / fingerprint.split(":")[-1]


def no_matcher_reason(encoder: _HasFingerprint, index_dir: Path | None) -> str:
    """What /info and a refused re-rank say when `matcher_file` finds nothing: how to train one for this model."""
    folder = index_matcher_folder(index_dir or Path("INDEX"), encoder.fingerprint)
    model = encoder.spec.model + (f" --pretrained {encoder.spec.pretrained}" if encoder.spec.pretrained else "")
    return (f"no matcher for this model: train one from captioned images with `python -m clipspace.align matcher "
            f"--corpus DIR --model {model}` (it writes {folder / MATCHER_FILE})")


def matcher_file(encoder: _HasFingerprint, index_dir: Path | None) -> Path | None:
    """The matcher to re-rank with: one trained for these weights beside the index first (the user's own, from
    their captions), else the one shipped beside a local-dir: model's weights; None when there is neither."""
    folders = [index_matcher_folder(index_dir, encoder.fingerprint)] if index_dir is not None else []
    folders += [folder] if (folder := model_folder(encoder)) is not None else []
    return next((folder / MATCHER_FILE for folder in folders if (folder / MATCHER_FILE).is_file()), None)
