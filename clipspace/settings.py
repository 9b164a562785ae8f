"""The one place settings are read: CLIPSPACE_* environment variables, with defaults that work out of the box."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clipspace.identity import PRECISIONS
from clipspace.images import DEFAULT_MAX_PIXELS
from clipspace.runtimes import RUNTIME_CHOICES

EMBEDDED_MODEL = "local-dir:data/models/clipspace-shapes-v5"
DEMO_IMAGES = Path("data/demo")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: clipspace.encoder.default_precision picks for the device


_RATE = re.compile(r"^\s*(?P<count>\d+(\.\d+)?)\s*/\s*(?P<unit>s|min)\s*(,\s*burst\s*=\s*(?P<burst>\d+)\s*)?$")


class RateLimit(BaseModel, frozen=True):
    """A token bucket: `per_second` tokens added each second, at most `burst` held; one request takes one."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`20/s,burst=40`, `300/min` (the burst defaults to one second's worth, at least 1)."""
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"CLIPSPACE_RATE_LIMIT={text!r} is not a rate limit: write REQUESTS/s or "
                             "REQUESTS/min, optionally followed by ,burst=N (e.g. 20/s,burst=40)")
        per_second = float(match["count"]) / (60 if match["unit"] == "min" else 1)
        if per_second <= 0:
            raise ValueError(f"CLIPSPACE_RATE_LIMIT={text!r}: the rate must be above 0")
        burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(per_second))
        if burst < 1:
            raise ValueError(f"CLIPSPACE_RATE_LIMIT={text!r}: the burst must be at least 1")
        return cls(per_second=per_second, burst=burst)


class Settings(BaseSettings):
    """Shared by the builder (as defaults for its flags) and the service (as its whole configuration)."""

    model_config = SettingsConfigDict(env_prefix="CLIPSPACE_", frozen=True)

    index_dir: Path = Path("var/index")
    images_dir: Path = DEMO_IMAGES
    model: str | None = Field(None, description="builder: model to embed with (default: the embedded model); "
                                                "service: load this instead of the manifest's model reference "
                                                "(it must be the same weights)")
    pretrained: str | None = None
    precision: str = Field("auto", pattern=f"^({'|'.join(PRECISION_CHOICES)})$")
    device: str = "cpu"
    runtime: str = Field("auto", pattern=f"^({'|'.join(RUNTIME_CHOICES)})$", description=(
        "service: what runs the towers. onnx: ONNX Runtime, exporting the model beside the index on first start "
        "if needed; auto: ONNX Runtime where a verified export exists (the builder makes one), in int8 where its int8 "
        "copy is measured faithful and faster on this machine, else torch; onnx-int8: "
        "as onnx, serving an int8 copy of the export made and verified beside it (else the fp32 export); torch: "
        "torch. Where ONNX Runtime cannot serve, torch does, and /info says why"))
    threads: int | None = Field(None, ge=1)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    reload_interval_s: float = Field(2.0, gt=0)
    max_batch: int = Field(32, ge=1)
    thumb_dir: Path | None = Field(None, description="service: where thumbnails are cached (default: "
                                                     "INDEX_DIR/thumbs)")
    api_keys_file: Path | None = Field(None, description="service: a file of API key hashes (`python -m app.keys "
                                                          "add FILE`); every route but the open ones needs a key")
    protect_metrics: bool = Field(False, description="service: /healthz, /readyz and /metrics need a key too")
    allow_anonymous: bool = Field(False, description="service: answer requests on a non-loopback address without "
                                                     "API keys")
    rate_limit: Annotated[RateLimit | None, NoDecode] = Field(
        None, description="service: a token bucket per key (per client address without keys), e.g. 20/s,burst=40")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="service: origins a browser may call the API from, comma-separated")

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate_limit(cls, value: object) -> object:
        if isinstance(value, str):
            return RateLimit.parse(value) if value.strip() else None
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return tuple(origin.strip() for origin in value.split(",") if origin.strip()) if isinstance(value, str) \
            else value
