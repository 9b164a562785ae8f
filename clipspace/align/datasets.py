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
from clipspace.align.wordnet_captions import with_wordnet_words, wordnet_lexicon
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


@dataclass(frozen=True)
class WorldOptions:
    """The synthetic world as training data: its two pools, the look each sample shows, the captions it draws.

    The defaults are the canonical world (one look, no shift, captions in both languages): the val pool's.
    """

    # the pools, rendered once into memory at `render_size` (the size `world` writes PNGs at; the model's own
    # resize follows)
    scenes: int = 20_000
    val_scenes: int = 1_000
    seed: int = 0
    val_seed: int = 1
    render_size: int = 128
    # domain randomisation: the share of training samples drawn from world.render_randomised instead of the
    # canonical look, from epoch `randomise_from_epoch` (0-based) on; each epoch draws anew which of a scene's
    # two renders it shows. Earlier epochs show the canonical look only, where shapes are easy to learn.
    randomised_share: float = 0.0
    randomise_from_epoch: int = 0
    # each sample is shifted by up to this many pixels (at the model's input size), anew every epoch, so shapes
    # are seen at every offset against the patch grid instead of at five fixed slots; 0 = no shift
    shift: int = 0
    # the randomised look places objects anywhere in their slot's region, at a wider spread of sizes
    # (world.render_randomised's free_layout); the canonical look keeps its five slots
    free_layout: bool = False
    # train on pairs of scenes that differ in one object's shape only, in the same batch (world.training_scenes)
    shape_twins: bool = False
    caption_language: str | None = None  # "en": English captions only, for an English-only text tower
    caption_frames: bool = False  # frame a third of the partial captions ("a photo of …", world.FRAMES)
    # the chance that each colour or shape word of an English caption is replaced by one of WordNet's words for it
    # (wordnet_captions: "a cerise disk"; the paraphrase eval's words held out); 0 = the world's words only
    wordnet_share: float = 0.0


class WorldPairs(Dataset):
    """A pool of rendered world scenes held in memory; each epoch draws a fresh caption for every scene.

    With `randomised` (a second render of every scene, by `world.render_randomised`), each epoch from
    `options.randomise_from_epoch` on also draws which of the two looks a scene shows: the randomised one with
    probability `options.randomised_share`. The canonical look makes shapes easy to learn first; the randomised
    one then teaches what does not matter.
    `about` names, per scene, the object its partial captions describe (`world.training_scenes`);
    `options.caption_language` restricts captions to one language and `options.caption_frames` frames some
    partial ones (`world.sample_caption`).
    With `options.shift`, every sample is moved by up to that many pixels each way (edges repeated): a few pixels
    do not change which slot an object is in, but they put its outline at every offset against the patch grid.
    Caption, look and shift of scene i in epoch e depend only on (seed, e, i), so training is reproducible
    whatever the number of loader workers; `seed` is the pool's own (`options.seed` or `options.val_seed`).
    """

    def __init__(self, scenes: Sequence[world.Scene], pixels: torch.Tensor, normalize: Normalize,
                 tokenizer: Callable, *, seed: int, randomised: torch.Tensor | None = None,
                 about: Sequence[int | None] | None = None, options: WorldOptions = WorldOptions()) -> None:
        self.scenes, self.pixels, self.normalize, self.tokenizer = list(scenes), pixels, normalize, tokenizer
        self.about = list(about) if about is not None else [None] * len(self.scenes)
        self.seed, self.randomised, self.options, self.epoch = seed, randomised, options, 0

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        options = self.options
        caption = world.sample_caption(self.scenes[index], rng, self.about[index], options.caption_language,
                                       options.caption_frames)
        if options.wordnet_share:
            caption = with_wordnet_words(caption, rng, options.wordnet_share, wordnet_lexicon())
        randomising = self.randomised is not None and self.epoch >= options.randomise_from_epoch
        pixels = self.randomised[index] if randomising and rng.random() < options.randomised_share \
            else self.pixels[index]
        if options.shift:
            pixels = shifted(pixels, *(int(v) for v in rng.integers(-options.shift, options.shift + 1, size=2)))
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


def world_pool(options: WorldOptions, split: str, preprocess: Callable, tokenizer: Callable) -> WorldPairs:
    """The "train" pool, drawn with the options' looks, shift and captions, or the "val" pool, canonical."""
    training = split == "train"
    n, seed = (options.scenes, options.seed) if training else (options.val_scenes, options.val_seed)
    scenes, about = world.training_scenes(n, seed, split, twins=training and options.shape_twins)
    pixels = render_world(scenes, options.render_size, preprocess)
    randomised = render_world(scenes, options.render_size, preprocess, randomise=True,
                              free_layout=options.free_layout) if training and options.randomised_share > 0 else None
    _, normalize = split_normalize(preprocess)
    return WorldPairs(scenes, pixels, normalize, tokenizer, seed=seed, randomised=randomised, about=about,
                      options=options if training else WorldOptions())


def render_world(scenes: Sequence[world.Scene], render_size: int, preprocess: Callable, randomise: bool = False,
                 free_layout: bool = False) -> torch.Tensor:
    """Render scenes and apply the model's resize: uint8 NCHW.

    Canonical renders are drawn at `render_size` (the size `world` saves); randomised ones
    (`world.render_randomised`, with its `free_layout`) choose their own size.
    """
    resize, _ = split_normalize(preprocess)
    chunks = [scenes[start:start + 1024] for start in range(0, len(scenes), 1024)]
    workers = min(len(chunks), os.cpu_count() or 1)
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
