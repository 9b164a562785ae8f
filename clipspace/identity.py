"""The model's identity in the shared space: enough to reload a model, and the one rule for "the same model"."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# How a model's towers compute: part of its identity, since each precision gives other vectors. Never fp16 on a CPU.
PRECISIONS = ("fp32", "bf16")


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
