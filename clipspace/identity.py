"""The model's identity in the shared space: which model to load, what an index records of it, and the one rule for
"the same model"; free of torch, so a service on ONNX Runtime reads it too."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# How a model's towers compute: part of its identity, since each precision gives other vectors. Never fp16 on a CPU.
PRECISIONS = ("fp32", "bf16")
# An index embedded by the int8 copy of the model's ONNX export (`--precision int8`): ONNX Runtime only, no torch dtype
INT8 = "int8"
INDEX_PRECISIONS = (*PRECISIONS, INT8)
NO_WEIGHTS = {None, "", "none", "random"}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how to run it.

    `model` is anything open_clip's factory accepts: a built-in architecture ("ViT-B-32"), "hf-hub:org/repo",
    "local-dir:/path" — or a path to an architecture JSON file (random init unless `pretrained` names weights).
    `pretrained` is a tag ("laion2b_s34b_b79k"), a checkpoint path, or None/"none" for seeded random weights
    (tests and benchmarks); it is ignored for hf-hub: and local-dir: models, which carry their weights.
    """

    model: str
    pretrained: str | None = None
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in INDEX_PRECISIONS:
            raise ValueError(f"precision must be one of {INDEX_PRECISIONS}, not {self.precision!r}")

    @property
    def has_weights(self) -> bool:
        return self.model.startswith(("hf-hub:", "local-dir:")) or self.pretrained not in NO_WEIGHTS


class ModelIdentity(BaseModel):
    """Which model embedded an index: enough to reload it (`model`, `pretrained`, `seed`) and to prove it is the same.

    `fingerprint` is a digest of the weights in fp32 (see clipspace.encoder.weights_fingerprint).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    pretrained: str | None = None
    seed: int | None = None
    precision: str
    fingerprint: str
    dim: int
    image_size: int
    preprocess: dict[str, Any]

    # What makes two vectors comparable: the same weights, run at the same precision, on pixels prepared the same
    # way, answering the same dimension. The reference (`model`, `pretrained`) is only where to find them.
    SAME_MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("fingerprint", "precision", "preprocess", "dim")

    def differences(self, other: ModelIdentity) -> list[str]:
        """The fields of the one `same_model` rule in which `other` differs from this identity."""
        return [name for name in self.SAME_MODEL_FIELDS if getattr(self, name) != getattr(other, name)]

    def same_model(self, other: ModelIdentity) -> bool:
        """True when vectors of `other` and of this model can be compared: used by the builder and the service."""
        return not self.differences(other)


def with_absolute_paths(spec: ModelSpec) -> ModelSpec:
    """Make file references absolute, so the manifest names the same model from any working directory."""
    model, pretrained = spec.model, spec.pretrained
    if model.startswith("local-dir:"):
        model = "local-dir:" + str(Path(model.removeprefix("local-dir:")).expanduser().resolve())
    elif model.endswith(".json"):
        model = str(Path(model).expanduser().resolve())
    if pretrained not in NO_WEIGHTS and Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser().resolve())
    return replace(spec, model=model, pretrained=pretrained)
