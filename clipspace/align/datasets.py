"""Image–caption pair sources for training and evaluation: a folder with sidecars, a manifest, the world."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import Compose, Normalize

from clipspace.align import world
from clipspace.images import is_image_path, load_image


@dataclass(frozen=True)
class CaptionedImage:
    """One pair; `objects` is set for world scenes, so attribute queries can be scored on them."""

    path: Path
    caption: str
    objects: tuple[world.SceneObject, ...] | None = None


def read_pairs(source: Path) -> list[CaptionedImage]:
    """Pairs from a folder (`x.jpg` + `x.txt`, or its captions.jsonl) or a .jsonl/.csv manifest."""
    if source.is_dir():
        manifest = source / "captions.jsonl"
        return read_manifest(manifest) if manifest.is_file() else read_folder(source)
    return read_manifest(source)


def read_folder(folder: Path) -> list[CaptionedImage]:
    """Every image with a `.txt` sidecar, in path order; images without one are not pairs and are left out."""
    pairs = []
    for path in sorted(folder.rglob("*")):
        sidecar = path.with_suffix(".txt")
        if is_image_path(path) and sidecar.is_file():
            pairs.append(CaptionedImage(path, sidecar.read_text(encoding="utf-8").strip()))
    if not pairs:
        raise ValueError(f"no image with a .txt caption sidecar under {folder}")
    return pairs


def read_manifest(manifest: Path) -> list[CaptionedImage]:
    """JSONL lines or CSV rows with `path` and `caption`; relative paths are relative to the manifest."""
    if manifest.suffix == ".jsonl":
        with manifest.open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
    elif manifest.suffix == ".csv":
        with manifest.open(encoding="utf-8", newline="") as table:
            rows = list(csv.DictReader(table))
    else:
        raise ValueError(f"{manifest}: expected a folder, a .jsonl or a .csv manifest")
    missing = [i for i, row in enumerate(rows) if "path" not in row or "caption" not in row]
    if missing:
        raise ValueError(f"{manifest}: rows {missing[:5]} lack a 'path' or 'caption' field")
    return [CaptionedImage(manifest.parent / row["path"], row["caption"],
                           world.objects_from_record(row) if "objects" in row else None) for row in rows]


def split_normalize(preprocess: Callable) -> tuple[Callable, Normalize]:
    """Split open_clip's image transform into its PIL stage (resize, crop, mode) and the final Normalize.

    Rendered world images are kept as the exact uint8 pixels the model's own resize produces — the tensor
    step in between only divides by 255 — so training sees what the service sees when it loads the same
    scene from a PNG, at a quarter of the memory.
    """
    if not isinstance(preprocess, Compose) or not isinstance(preprocess.transforms[-1], Normalize):
        raise ValueError("expected an open_clip transform ending in ToTensor and Normalize")
    return Compose(preprocess.transforms[:-2]), preprocess.transforms[-1]


class FilePairs(Dataset):
    """Pairs read from disk through the project's image loader and the model's preprocessing.

    No augmentation: captions may name positions and sizes, which random crops and flips would falsify.
    """

    def __init__(self, pairs: Sequence[CaptionedImage], preprocess: Callable, tokenizer: Callable) -> None:
        self.pairs, self.preprocess, self.tokenizer = list(pairs), preprocess, tokenizer

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        return self.preprocess(load_image(pair.path)), self.tokenizer([pair.caption])[0]

    def set_epoch(self, epoch: int) -> None:
        """Files have one caption each; nothing changes between epochs."""


class WorldPairs(Dataset):
    """A pool of rendered world scenes held in memory; each epoch draws a fresh caption for every scene.

    With `randomised` (a second render of every scene, by `world.render_randomised`), each epoch from
    `randomise_from_epoch` on also draws which of the two looks a scene shows: the randomised one with
    probability `randomised_share`. The canonical look makes shapes easy to learn first; the randomised one
    then teaches what does not matter.
    `about` names, per scene, the object its partial captions describe (`world.training_scenes`); `language`
    restricts captions to one language and `framed` frames some partial ones (`world.sample_caption`).
    With `shift`, every sample is moved by up to that many pixels each way (edges repeated): a few pixels do
    not change which slot an object is in, but they put its outline at every offset against the patch grid.
    Caption, look and shift of scene i in epoch e depend only on (seed, e, i), so training is reproducible
    whatever the number of loader workers.
    """

    def __init__(self, scenes: Sequence[world.Scene], pixels: torch.Tensor, normalize: Normalize,
                 tokenizer: Callable, seed: int, randomised: torch.Tensor | None = None,
                 randomised_share: float = 0.0, randomise_from_epoch: int = 0, shift: int = 0,
                 about: Sequence[int | None] | None = None, language: str | None = None,
                 framed: bool = False) -> None:
        self.scenes, self.pixels, self.normalize, self.tokenizer = list(scenes), pixels, normalize, tokenizer
        self.about = list(about) if about is not None else [None] * len(self.scenes)
        self.language, self.framed = language, framed
        self.randomised, self.randomised_share = randomised, randomised_share
        self.randomise_from_epoch, self.shift = randomise_from_epoch, shift
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        caption = world.sample_caption(self.scenes[index], rng, self.about[index], self.language, self.framed)
        randomising = self.randomised is not None and self.epoch >= self.randomise_from_epoch
        pixels = self.randomised[index] if randomising and rng.random() < self.randomised_share else self.pixels[index]
        if self.shift:
            pixels = shifted(pixels, *(int(v) for v in rng.integers(-self.shift, self.shift + 1, size=2)))
        return self.normalize(pixels.float().div_(255)), self.tokenizer([caption])[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def shifted(pixels: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """A CHW image moved by (down, right) pixels, the uncovered edge filled by repeating the border."""
    if not (down or right):
        return pixels
    pad = max(abs(down), abs(right))
    padded = torch.nn.functional.pad(pixels[None].float(), (pad, pad, pad, pad), mode="replicate")[0]
    height, width = pixels.shape[-2:]
    return padded[:, pad - down:pad - down + height, pad - right:pad - right + width].to(pixels.dtype)


class PairedShuffle(Sampler[int]):
    """A random order that keeps scenes 2k and 2k+1 next to each other, so a shape twin shares its batch.

    With an even batch size every batch holds whole pairs.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        for pair in torch.randperm(self.size // 2, generator=self.generator).tolist():
            yield from (2 * pair, 2 * pair + 1)
        if self.size % 2:
            yield self.size - 1


def render_world(scenes: Sequence[world.Scene], render_size: int, preprocess: Callable, workers: int = 0,
                 randomise: bool = False, free_layout: bool = False) -> torch.Tensor:
    """Render scenes and apply the model's resize: uint8 NCHW.

    Canonical renders are drawn at `render_size` (the size `world` saves); randomised ones
    (`world.render_randomised`, with its `free_layout`) choose their own size.
    """
    resize, _ = split_normalize(preprocess)
    chunks = [scenes[start:start + 1024] for start in range(0, len(scenes), 1024)]
    workers = workers or min(len(chunks), os.cpu_count() or 1)
    if workers > 1:
        # spawn, not fork: a child forked from a process with live torch/OpenMP threads can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_render_chunk, chunks, [render_size] * len(chunks), [resize] * len(chunks),
                                  [randomise] * len(chunks), [free_layout] * len(chunks)))
    else:
        parts = [_render_chunk(chunk, render_size, resize, randomise, free_layout) for chunk in chunks]
    pixels = np.concatenate(parts) if parts else np.zeros((0, render_size, render_size, 3), np.uint8)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def _render_chunk(scenes: Sequence[world.Scene], render_size: int, resize: Callable,
                  randomise: bool = False, free_layout: bool = False) -> np.ndarray:
    if randomise:
        return np.stack([np.asarray(resize(world.render_randomised(scene, free_layout))) for scene in scenes])
    return np.stack([np.asarray(resize(world.render_scene(scene, render_size))) for scene in scenes])
