"""What lives beside a model's weights for fusion, and how deep re-ranking reads: facts the service needs without
importing torch (the matcher itself runs on torch, clipspace.fusion.rerank)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from clipspace.identity import ModelSpec

MATCHER_FILE = "matcher.safetensors"
CONCAT_FILE = "concat-mlp.safetensors"
RERANK_DEPTH = 50  # candidates re-scored per query: the dual encoder's top 50 (measured in fusion-eval)


class _HasSpec(Protocol):
    spec: ModelSpec


def model_folder(encoder: _HasSpec) -> Path | None:
    """The folder of a `local-dir:` model, where its matcher lives beside its weights."""
    model = encoder.spec.model
    return Path(model.removeprefix("local-dir:")) if model.startswith("local-dir:") else None
