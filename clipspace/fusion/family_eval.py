"""The binding table per caption family, on pictures by the held-out renderer: does a matcher bind in a user's words?

Two-object `test` scenes are drawn by clipspace.align.heldout (its own shapes, palette and styles, on a flat
background), each with one twin of every kind it allows. For each family (clipspace.fusion.phrasings) a pair is
the scene and one twin, of a kind drawn among the swaps (colours, places, sizes) that are hard negatives in that
family; the counts family also draws changed counts. Binding is about swaps: a changed count is told apart by a
bag of words (cosine does it), and every family would otherwise be mostly count changes, since every scene has one.
Binding accuracy: the scene's caption scores its own picture above its twin's. Re-ranked R@1: each picture's
caption against all the family's pictures (scenes and twins), the cosine top `rerank_depth` re-scored as the
service does.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from clipspace.align import heldout, world
from clipspace.encoder import DualEncoder
from clipspace.fusion.features import LANGUAGES, TwinFeatures, encode_captions, encode_scenes, pair_captions
from clipspace.fusion.phrasings import FAMILIES, SWAP_KINDS, is_negative
from clipspace.fusion.scoring import Scorer, binding_accuracy, rerank_recall
from clipspace.fusion.twins import KINDS, MAKERS

log = logging.getLogger(__name__)

SCORER_ORDER = ("cosine", "concat-mlp", "cross-attention")


@dataclass(frozen=True)
class HeldoutTwins:
    """Scenes and every twin each allows, drawn once by the held-out renderer and encoded once."""

    scenes: list[world.Scene]
    twins: list[dict[str, tuple[world.Scene, int]]]  # per scene: kind -> (twin, its image row)
    patches: torch.Tensor  # rows [0, n) the scenes, then the twins
    pooled: torch.Tensor


def render_heldout(scene: world.Scene):
    return heldout.render_picture(heldout.picture_of_scene(scene))


def heldout_twins(encoder: DualEncoder, n: int, seed: int, progress: bool = True) -> HeldoutTwins:
    rng = np.random.default_rng([seed, 21])
    scenes, twins, extra, index = [], [], [], 0
    while len(scenes) < n:
        scene = world.sample_scene(seed, "test", index)
        index += 1
        if len(scene.objects) != 2:
            continue
        made = {}
        for kind in KINDS:
            other = MAKERS[kind](scene, rng)
            if other is not None:
                made[kind] = (other, n + len(extra))
                extra.append(other)
        scenes.append(scene)
        twins.append(made)
    patches, pooled = encode_scenes(encoder, scenes + extra, progress=progress, render=render_heldout)
    return HeldoutTwins(scenes, twins, patches, pooled)


def family_pairs(encoder: DualEncoder, drawn: HeldoutTwins, family: str, seed: int) -> TwinFeatures | None:
    """The family's pairs: each scene with one twin that is a hard negative in the family (scenes with none
    are left out), captioned in the family; None if no scene has one."""
    rng = np.random.default_rng([seed, len(family)])
    scenes, twins, kinds, rows = [], [], [], []
    for i, (scene, made) in enumerate(zip(drawn.scenes, drawn.twins, strict=True)):
        usable = [kind for kind, (other, _) in made.items() if is_negative(scene, other, kind, family)
                  and (kind in SWAP_KINDS or family == "counts")]
        if not usable:
            continue
        kind = usable[int(rng.integers(len(usable)))]
        other, row = made[kind]
        scenes.append(scene)
        twins.append(other)
        kinds.append(kind)
        rows.append((i, row))
    if not scenes:
        return None
    order = [i for i, _ in rows] + [row for _, row in rows]
    families = (family,) * len(scenes)
    text = {language: encode_captions(encoder, pair_captions(scenes, twins, language, families))
            for language in LANGUAGES}
    return TwinFeatures(scenes, twins, kinds, drawn.patches[order], drawn.pooled[order], text, families)


def family_table(encoder: DualEncoder, scorers: dict[str, Scorer], n: int, seed: int, depth: int,
                 progress: bool = True) -> dict[str, object]:
    """Per family: its pairs, the kinds of their twins, binding accuracy and re-ranked R@1 of every scorer."""
    drawn = heldout_twins(encoder, n, seed, progress)
    table: dict[str, object] = {}
    for family in FAMILIES:
        pairs = family_pairs(encoder, drawn, family, seed)
        if pairs is None:
            continue
        table[family] = {"pairs": pairs.n, "kinds": dict(Counter(pairs.kinds)),
                         "binding_accuracy": binding_accuracy(pairs, scorers),
                         "text_to_image_R@1": rerank_recall(pairs, scorers, depth)}
        log.info("family %s: %s", family, table[family]["binding_accuracy"])
    return {"scenes": n, "seed": seed, "rerank_depth": depth, "families": table}


def render_family_table(section: dict) -> list[str]:
    """One row per family; each cell gives cosine / concat-MLP / cross-attention (those that were scored)."""
    families = section["families"]
    if not families:
        return []
    scorers = [name for name in SCORER_ORDER if name in next(iter(families.values()))["binding_accuracy"]]
    heading = " / ".join(scorers)
    lines = [f"Caption families on held-out renders ({section['scenes']} two-object test scenes, seed "
             f"{section['seed']}, drawn by the held-out renderer on flat backgrounds): binding = the scene's caption "
             f"scores its picture above its twin's (twins of the kinds the family can tell apart; chance 0.5); R@1 "
             f"over the family's scenes + twins, re-ranking the cosine top {section['rerank_depth']}. "
             f"Cells: {heading}",
             "| family | pairs | binding en | binding zh | R@1 en | R@1 zh |", "|---|---|---|---|---|---|"]
    for family, row in families.items():
        cells = [" / ".join(f"{row[metric][name][language]:.2f}" for name in scorers)
                 for metric in ("binding_accuracy", "text_to_image_R@1") for language in LANGUAGES]
        lines.append(f"| {family} | {row['pairs']} | " + " | ".join(cells) + " |")
    return lines
