"""The one place settings are read: CLIPSPACE_* environment variables, with defaults that work out of the box."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clipspace.identity import PRECISIONS
from clipspace.images import DEFAULT_MAX_PIXELS
from clipspace.runtimes import RUNTIME_CHOICES

EMBEDDED_MODEL = "local-dir:data/models/clipspace-shapes-v5"
DEMO_IMAGES = Path("data/demo")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: clipspace.encoder.default_precision picks for the device


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
        "if needed; auto: ONNX Runtime where a verified export exists (the builder makes one), else torch; torch: "
        "torch. Where ONNX Runtime cannot serve, torch does, and /info says why"))
    threads: int | None = Field(None, ge=1)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    reload_interval_s: float = Field(2.0, gt=0)
    max_batch: int = Field(32, ge=1)
    thumb_dir: Path | None = Field(None, description="service: where thumbnails are cached (default: "
                                                     "INDEX_DIR/thumbs)")
