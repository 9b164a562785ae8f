"""The index manifest: the typed contract between the builder that writes a version and the service that reads it.

It is read in three places (builder, service, benchmarks), so it is one frozen type with one rule for "the same
model", instead of a dict read by string keys with a rule re-typed in each place.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clipspace.errors import IndexCorrupt
from clipspace.identity import ModelIdentity
from clipspace.index.calibration import Calibration

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: one vectors.npy / captions.npy per version, no shards


class Shard(BaseModel):
    """One file of rows (vectors or patch tokens), in row order after the shards before it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    rows: int


class Manifest(BaseModel):
    """manifest.json of one index version; every file of the version is listed in `checksums`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    model: ModelIdentity
    dim: int
    count: int
    caption_count: int
    next_id: int
    faiss_factory: str
    # Per target ("image", "text"): FAISS's efSearch / nprobe and k_factor (candidates per answer re-ranked
    # exactly), tuned at build time and applied to every query. Empty in indexes written before they were recorded.
    search_params: dict[str, dict[str, int]] = Field(default_factory=dict)
    corpus_root: str
    created_at: str
    builder_version: str
    build_report: dict[str, Any]
    checksums: dict[str, str]
    image_shards: tuple[Shard, ...]
    caption_shards: tuple[Shard, ...]
    # The image tower's patch tokens (tokens, width) of every image, float16, in image row order: written when the
    # model has a cross-attention matcher, so re-ranking reads them instead of decoding and embedding candidates.
    token_shape: tuple[int, int] | None = None
    token_shards: tuple[Shard, ...] = ()
    # cosine -> relevance, fitted on this version's vectors for this model (clipspace.index.calibration); None in
    # versions written before it was, which serve with relevance null.
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _calibration_of_this_model(self) -> Manifest:
        if self.calibration is not None and self.calibration.fingerprint != self.model.fingerprint:
            raise ValueError("the relevance calibration was fitted for another model")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        """Parse and validate; a format this clipspace does not know is refused with what to do about it."""
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise IndexCorrupt(f"{where}: manifest.json is not JSON: {error}") from error
        found = raw.get("format_version") if isinstance(raw, dict) else None
        if found not in READABLE_FORMATS:
            raise IndexCorrupt(f"{where}: index format {found!r} is not one this clipspace reads "
                               f"({', '.join(map(str, READABLE_FORMATS))}); rebuild the index with "
                               "`python -m index_builder` from this version of clipspace")
        if found == 1:
            raw = _upgraded_from_format_1(raw)
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise IndexCorrupt(f"{where}: manifest.json does not describe an index version: {error}") from error


def _upgraded_from_format_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept all vectors in vectors.npy and captions.npy: each is one shard, the rest is unchanged."""
    captions = raw.get("caption_count", 0)
    return {**raw, "format_version": 1,
            "image_shards": [{"file": "vectors.npy", "rows": raw.get("count", 0)}],
            "caption_shards": [{"file": "captions.npy", "rows": captions}] if captions else []}
