"""Scenes and their hard-negative twins, rendered once and run once through the frozen dual encoder.

Everything the matchers train and are evaluated on is computed here a single time: patch tokens and
pooled embeddings of every image, token states and pooled embeddings of every caption in English and
Chinese. Training then never touches the dual encoder again, which is what makes it cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from clipspace.align import world
from clipspace.encoder import DualEncoder
from clipspace.fusion import phrasings
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
    families: tuple[str, ...] | None = None  # the caption family of each pair (phrasings); None: canonical

    @property
    def n(self) -> int:
        return len(self.scenes)

    def captions(self, language: str) -> list[str]:
        return pair_captions(self.scenes, self.twins, language, self.families)


def pair_captions(scenes: list[world.Scene], twins: list[world.Scene], language: str,
                  families: tuple[str, ...] | None = None) -> list[str]:
    """Captions of the scenes then of their twins, each pair in its family (canonical without families)."""
    if families is None:
        return [CAPTION[language](scene) for scene in scenes + twins]
    return [phrasings.caption(scene, family, language) for scene, family in zip(scenes + twins, families * 2,
                                                                                 strict=True)]


def pick_families(scenes: list[world.Scene], twins: list[world.Scene], kinds: list[str],
                  seed: int) -> tuple[str, ...]:
    """One caption family per pair, drawn among those in which the twin is a hard negative: each pair's text is
    encoded once, in one family, so memory and encoding time stay those of canonical captions."""
    rng = np.random.default_rng([seed, 21])
    picked = []
    for scene, other, kind in zip(scenes, twins, kinds, strict=True):
        usable = phrasings.families_for(scene, other, kind) or ["canonical"]
        picked.append(usable[int(rng.integers(len(usable)))])
    return tuple(picked)


def randomised_render(fraction: float, render_size: int = 128) -> Callable[[world.Scene], Image.Image]:
    """Draw `fraction` of the scenes (chosen by noise seed, so a twin looks like its scene) with the
    domain-randomised renderer the embedded model trained on, the rest canonically."""
    def render(scene: world.Scene) -> Image.Image:
        if np.random.default_rng([scene.noise_seed, 0xF4]).random() < fraction:
            return world.render_randomised(scene)
        return world.render_scene(scene, render_size)
    return render


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


def make_family_twins(n: int, seed: int, split: str, swap_share: float) -> tuple[list[world.Scene],
                                                                                 list[world.Scene], list[str],
                                                                                 tuple[str, ...]]:
    """n scenes, each with a family drawn uniformly and a twin that is a hard negative in it: a swap (colours,
    places or sizes, as the family can tell) with chance `swap_share`, otherwise a changed count.

    Why not `make_twins` then `pick_families`: twins drawn first are mostly changed counts (every scene allows
    one, a one-object scene nothing else), and a family without places or sizes can tell only a colour swap from
    its scene, so the bare families got ~3% of the pairs each that teach binding, and nothing bound (lab notes).
    A scene that allows no twin of the drawn sort is passed over; one-object scenes allow only changed counts, so
    swaps come out fewer than `swap_share` (~0.64 of pairs at 0.8)."""
    rng = np.random.default_rng([seed, 23])
    names = tuple(phrasings.FAMILIES)
    scenes, twins, made, families, index = [], [], [], [], 0
    while len(scenes) < n:
        scene = world.sample_scene(seed, split, index)
        index += 1
        family = names[int(rng.integers(len(names)))]
        kinds = phrasings.SWAP_KINDS if rng.random() < swap_share else ("count_change",)
        drawn = phrasings.family_twin(scene, family, rng, kinds)
        if drawn is None:
            continue
        scenes.append(scene)
        twins.append(drawn[1])
        made.append(drawn[0])
        families.append(family)
    return scenes, twins, made, tuple(families)


def encode_scenes(encoder: DualEncoder, scenes: list[world.Scene], render_size: int = 128,
                  batch: int = 256, progress: bool = True,
                  render: Callable[[world.Scene], Image.Image] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render (by default at the size `world` writes PNGs), preprocess as the service does, keep patches and
    embeddings."""
    render = render or (lambda scene: world.render_scene(scene, render_size))
    patches, pooled = [], []
    for start in tqdm(range(0, len(scenes), batch), desc="images", disable=not progress, dynamic_ncols=True):
        pixels = torch.stack([encoder.preprocess(render(scene)) for scene in scenes[start:start + batch]])
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
                  min_objects: int = 1, render_size: int = 128, progress: bool = True, families: bool = False,
                  randomised: float = 0.0, swap_share: float | None = None) -> TwinFeatures:
    """With `families`, each pair is captioned in a family where its twin is a hard negative: the family drawn
    first and a swap twin with chance `swap_share` (`make_family_twins`), or, without it, the twin first
    (`pick_families`); with `randomised`, that fraction of the pairs is drawn by the domain-randomised renderer."""
    if families and swap_share is not None:
        scenes, twins, made, picked = make_family_twins(n, seed, split, swap_share)
    else:
        scenes, twins, made = make_twins(n, seed, split, kinds, min_objects)
        picked = pick_families(scenes, twins, made, seed) if families else None
    render = randomised_render(randomised, render_size) if randomised else None
    patches, pooled = encode_scenes(encoder, scenes + twins, render_size, progress=progress, render=render)
    text = {language: encode_captions(encoder, pair_captions(scenes, twins, language, picked))
            for language in LANGUAGES}
    log.info("encoded %d scenes and their twins (%s) in %s", n, ", ".join(sorted(set(made))), "en, zh")
    return TwinFeatures(scenes, twins, made, patches, pooled, text, picked)
