"""Scenes and their hard-negative twins, rendered once and run once through the frozen dual encoder.

Everything the matchers train and are evaluated on is computed here a single time: patch tokens and
pooled embeddings of every image, token states and pooled embeddings of every caption in English and
Chinese. Training then never touches the dual encoder again, which is what makes it cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from clipspace.align import world
from clipspace.encoder import DualEncoder
from clipspace.fusion.tokens import TextTokens, image_tokens, text_tokens
from clipspace.fusion.twins import KINDS, twin

log = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")
CAPTION = {"en": world.canonical_caption, "zh": world.canonical_caption_zh}


@dataclass(frozen=True)
class TwinFeatures:
    """Rows [0, n) are the scenes, rows [n, 2n) their twins, in images and in captions alike."""

    scenes: list[world.Scene]
    twins: list[world.Scene]
    kinds: list[str]
    patches: torch.Tensor  # (2n, tokens, width) float16
    image_pooled: torch.Tensor  # (2n, dim)
    text: dict[str, TextTokens]  # per language, states float16

    @property
    def n(self) -> int:
        return len(self.scenes)

    def captions(self, language: str) -> list[str]:
        return [CAPTION[language](scene) for scene in self.scenes + self.twins]


def make_twins(n: int, seed: int, split: str, kinds: tuple[str, ...] = KINDS,
               min_objects: int = 1) -> tuple[list[world.Scene], list[world.Scene], list[str]]:
    """n scenes of the split (with at least `min_objects` objects) and one twin each, reproducibly."""
    rng = np.random.default_rng([seed, 7])
    scenes, twins, made, index = [], [], [], 0
    while len(scenes) < n:
        scene = world.sample_scene(seed, split, index)
        index += 1
        if len(scene.objects) < min_objects:
            continue
        made_twin = twin(scene, rng, kinds)
        if made_twin is None:  # e.g. a colour swap in a scene of one colour: take the next scene
            continue
        kind, other = made_twin
        scenes.append(scene)
        twins.append(other)
        made.append(kind)
    return scenes, twins, made


def encode_scenes(encoder: DualEncoder, scenes: list[world.Scene], render_size: int = 128,
                  batch: int = 256, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Render at the size `world` writes PNGs, preprocess as the service does, keep patches and embeddings."""
    patches, pooled = [], []
    for start in tqdm(range(0, len(scenes), batch), desc="images", disable=not progress, dynamic_ncols=True):
        pixels = torch.stack([encoder.preprocess(world.render_scene(scene, render_size))
                              for scene in scenes[start:start + batch]])
        tokens = image_tokens(encoder, pixels)
        patches.append(tokens.patches.half())
        pooled.append(tokens.pooled)
    return torch.cat(patches), torch.cat(pooled)


def encode_captions(encoder: DualEncoder, captions: list[str], batch: int = 512) -> TextTokens:
    """Token states of every caption, padded to the longest one, in float16."""
    parts = [text_tokens(encoder, captions[start:start + batch]) for start in range(0, len(captions), batch)]
    length = max(part.states.shape[1] for part in parts)
    states = torch.cat([torch.nn.functional.pad(p.states, (0, 0, 0, length - p.states.shape[1])) for p in parts])
    mask = torch.cat([torch.nn.functional.pad(p.mask, (0, length - p.mask.shape[1])) for p in parts])
    return TextTokens(states.half(), mask, torch.cat([part.pooled for part in parts]))


def twin_features(encoder: DualEncoder, n: int, seed: int, split: str, kinds: tuple[str, ...] = KINDS,
                  min_objects: int = 1, render_size: int = 128, progress: bool = True) -> TwinFeatures:
    scenes, twins, made = make_twins(n, seed, split, kinds, min_objects)
    patches, pooled = encode_scenes(encoder, scenes + twins, render_size, progress=progress)
    text = {language: encode_captions(encoder, [CAPTION[language](s) for s in scenes + twins])
            for language in LANGUAGES}
    log.info("encoded %d scenes and their twins (%s) in %s", n, ", ".join(sorted(set(made))), "en, zh")
    return TwinFeatures(scenes, twins, made, patches, pooled, text)
