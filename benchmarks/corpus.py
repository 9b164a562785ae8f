"""The image corpus a benchmark indexes: generated photo-sized JPEGs, or an existing folder used as it is.

Generated images carry a smooth colour field, shapes and sensor-like noise, so their JPEGs are as costly to
decode as a camera photo of the same size; flat colour would decode far faster and flatter the builder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from index_builder.files import list_images

JPEG_QUALITY = 90
NOISE_SIGMA = 8.0


@dataclass(frozen=True)
class Corpus:
    root: Path
    paths: tuple[str, ...]  # relative, in the builder's own scan order
    total_bytes: int
    generated: bool
    image_size: tuple[int, int] | None  # (width, height) of generated images; None for an existing folder

    @property
    def count(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        return {"root": str(self.root), "count": self.count, "total_mb": round(self.total_bytes / 1e6, 2),
                "mean_kb": round(self.total_bytes / max(self.count, 1) / 1e3, 1), "generated": self.generated,
                "image_size": list(self.image_size) if self.image_size else None}


def generate_corpus(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> Corpus:
    """Write `count` distinct JPEGs of `size` (every fourth one portrait, as phone photos are) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = size if index % 4 else size[::-1]
        _photo_like(np.random.default_rng(seed + index), width, height).save(
            root / f"img_{index:06d}.jpg", quality=JPEG_QUALITY)
    return _described(root, generated=True, image_size=size)


def existing_corpus(root: Path) -> Corpus:
    """An existing folder, scanned exactly as the builder scans it."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    corpus = _described(root, generated=False, image_size=None)
    if corpus.count == 0:
        raise FileNotFoundError(f"no images under {root}")
    return corpus


def copy_subset(corpus: Corpus, dest: Path, count: int) -> Corpus:
    """The first `count` files of `corpus` copied to `dest`, for a warm-up build that leaves the real one cold."""
    for path in corpus.paths[:count]:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus.root / path, target)
    return _described(dest, generated=corpus.generated, image_size=corpus.image_size)


def _described(root: Path, generated: bool, image_size: tuple[int, int] | None) -> Corpus:
    paths = tuple(sorted(listed.path for listed in list_images(root, max_file_bytes=1 << 62)))
    total = sum((root / path).stat().st_size for path in paths)
    return Corpus(root, paths, total, generated, image_size)


def _photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # A tiny random colour grid upscaled bicubically gives smooth gradients, like light across a scene.
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                     Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
        colour = tuple(int(channel) for channel in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noise = rng.normal(0.0, NOISE_SIGMA, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(field, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
