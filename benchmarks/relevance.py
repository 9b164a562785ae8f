"""Calibrated relevance on the embedded model's world: absent concepts, present concepts, calibration error, and a
model without captions (issue 22, part 1).

- Absent: for each shape ("a star"), colour ("a red shape") and number of objects ("three shapes"), a corpus of
  captioned scenes that holds none of it is built by the real builder (which fits the calibration), and the
  concept is asked at min_relevance 0.5: the share of such queries answered with no result (goal >= 0.9).
  Counts of one kind of shape ("two stars") are reported on their own line: the model cannot count those.
- Present: one corpus holding everything; every concept it holds (the ones above and each colour+shape), top 10
  with and without the cut: mean recall@10 (relevant in the top 10 / min(10, relevant)), goal: within 0.05.
- Calibration: the expected calibration error, at even odds as the calibration is fitted, on held-out labelled
  pairs: the first 10 results of every concept query on the present corpus (its texts were never fitted on:
  the calibration learns from caption clauses), labelled by the scene's truth; and the builder's own held-out
  caption pairs. Goal <= 0.05. A reliability plot (PNG) goes to the output folder. The concept pairs' error is also
  given at their own share of matches, with the mean cosine of matches and others: at even odds, pairs a cosine
  cannot tell apart are calibrated only at 0.5.
- Without captions: ViT-B-32 with random weights on the same pictures without sidecars: the calibration is the
  null tail; relevance over the whole cosine range is checked monotone and within [0, 1].
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.report import progress
from clipspace.align import world
from clipspace.encoder import DualEncoder
from clipspace.index.calibration import TOP, expected_calibration_error, map_key
from clipspace.index.channels import find
from clipspace.index.publish import open_current
from clipspace.index.relevance import RelevanceCut, judged
from index_builder.build import build_index
from index_builder.options import BuildOptions

CUT = 0.5  # issue 22: "more likely a match than not"
GOAL_ABSENT, GOAL_RECALL_GAP, GOAL_ECE = 0.9, 0.05, 0.05
IMAGE_SIZE = 128
Scene = world.Scene
Predicate = Callable[[Scene], bool]


@dataclass
class RelevanceBench:
    model: str
    absent_items: int
    present_items: int
    absent: dict[str, float] = field(default_factory=dict)  # query -> best relevance in its concept-free corpus
    absent_empty_share: float = 0.0
    absent_counts_of_a_shape: dict[str, float] = field(default_factory=dict)
    present_queries: int = 0
    recall_uncut: float = 0.0
    recall_cut: float = 0.0
    recall_autocut: float = 0.0
    autocut_kept_absent: float = 0.0  # mean results autocut keeps of an absent concept's top 50
    ece_concept_pairs: float = 0.0
    ece_concept_pairs_natural: float = 0.0  # at the pairs' own share of matches (95%), not at even odds
    concept_pairs_cosine: dict = field(default_factory=dict)  # mean cosine of matches / others, share of matches
    ece_caption_pairs: float | None = None  # the builder's own held-out pairs (manifest)
    calibration: dict = field(default_factory=dict)
    reliability_plot: str = ""
    no_captions: dict = field(default_factory=dict)
    seconds: float = 0.0


def concepts() -> dict[str, Predicate]:
    """The absent/present concepts: shapes, colours and numbers of objects."""
    asked: dict[str, Predicate] = {f"a {shape}": lambda s, shape=shape: any(o.shape == shape for o in s.objects)
                                   for shape in world.SHAPES}
    asked |= {f"a {colour} shape": lambda s, colour=colour: any(o.colour == colour for o in s.objects)
              for colour in world.COLOURS}
    asked |= {f"{word} {'shape' if n == 1 else 'shapes'}": lambda s, n=n: len(s.objects) == n
              for n, word in ((1, "one"), (2, "two"), (3, "three"))}
    return asked


def counts_of_a_shape() -> dict[str, Predicate]:
    return {f"two {world._EN_PLURAL[shape]}": lambda s, shape=shape: sum(o.shape == shape for o in s.objects) == 2
            for shape in world.SHAPES}


def combos() -> dict[str, Predicate]:
    return {f"a {colour} {shape}": lambda s, combo=(colour, shape): combo in s.combos
            for colour in world.COLOURS for shape in world.SHAPES}


def measure_relevance(embedded: DualEncoder, no_captions: DualEncoder | None, work_dir: Path, out_dir: Path,
                      absent_items: int = 300, present_items: int = 600, seed: int = 5) -> RelevanceBench:
    started = time.perf_counter()
    bench = RelevanceBench(model=embedded.identity.model, absent_items=absent_items, present_items=present_items)
    pool = list(world.generate_scenes(8 * absent_items, seed, "all"))
    pictures = work_dir / "relevance-pictures"
    _render(pool, pictures)
    for group, out in ((concepts(), bench.absent), (counts_of_a_shape(), bench.absent_counts_of_a_shape)):
        for text, holds in group.items():
            chosen = [index for index, scene in enumerate(pool) if not holds(scene)][:absent_items]
            index_dir = _built(embedded, pictures, chosen, work_dir / f"absent-{text.replace(' ', '-')}", pool)
            out[text] = _best_relevance(embedded, index_dir, text)
            progress(f"relevance: absent {text!r}: best relevance {out[text]:.3f}")
    bench.absent_empty_share = float(np.mean([best < CUT for best in bench.absent.values()]))
    present = list(range(present_items))
    index_dir = _built(embedded, pictures, present, work_dir / "present", pool)
    _present(bench, embedded, index_dir, [pool[i] for i in present], out_dir)
    if no_captions is not None:
        index_dir = _built(no_captions, pictures, present[:200], work_dir / "no-captions", pool, captions=False)
        bench.no_captions = _without_captions(no_captions, index_dir)
    bench.seconds = round(time.perf_counter() - started, 1)
    return bench


def _render(pool: list[Scene], folder: Path) -> None:
    folder.mkdir(parents=True)
    for index, scene in enumerate(pool):
        world.render_scene(scene, IMAGE_SIZE).save(folder / f"{index:05d}.png", compress_level=1)


def _built(encoder: DualEncoder, pictures: Path, chosen: list[int], root: Path, pool: list[Scene],
           captions: bool = True) -> Path:
    """An index of the chosen scenes (their rendered pictures linked, canonical captions as sidecars)."""
    images = root / "images"
    images.mkdir(parents=True)
    for index in chosen:
        os.link(pictures / f"{index:05d}.png", images / f"{index:05d}.png")
        if captions:
            (images / f"{index:05d}.txt").write_text(world.canonical_caption(pool[index]) + "\n", encoding="utf-8")
    build_index(BuildOptions(images=images, index=root / "index", progress=False), encoder)
    return root / "index"


def _ranked(encoder: DualEncoder, index_dir: Path, texts: list[str], depth: int, cut: RelevanceCut
            ) -> Iterator[tuple[str, list]]:
    version = open_current(index_dir)
    try:
        for text, vector in zip(texts, encoder.embed_texts(texts), strict=True):
            found = find(version, vector, text, depth)
            yield text, judged(version, found, vector, key=map_key("text", "image"), target="image",
                               cosines_in_list=True, cut=cut)
    finally:
        version.close()


def _best_relevance(encoder: DualEncoder, index_dir: Path, text: str) -> float:
    [(_, found)] = list(_ranked(encoder, index_dir, [text], 1, RelevanceCut()))
    return round(found[0].relevance, 4)


def _present(bench: RelevanceBench, encoder: DualEncoder, index_dir: Path, scenes: list[Scene],
             out_dir: Path) -> None:
    asked = {text: holds for text, holds in (concepts() | combos()).items() if any(holds(s) for s in scenes)}
    relevant = {text: {f"{i:05d}.png" for i, s in enumerate(scenes) if holds(s)} for text, holds in asked.items()}
    recall: dict[str, list[float]] = {"uncut": [], "cut": [], "autocut": []}
    predicted, labels = [], []
    for name, cut in (("uncut", RelevanceCut()), ("cut", RelevanceCut(CUT)), ("autocut", RelevanceCut(autocut=True))):
        for text, found in _ranked(encoder, index_dir, list(asked), TOP, cut):
            hits = [each.hit.path in relevant[text] for each in found]
            recall[name].append(sum(hits) / min(TOP, len(relevant[text])))
            if name == "uncut":
                predicted += [each.relevance for each in found]
                labels += hits
    bench.present_queries = len(asked)
    bench.recall_uncut, bench.recall_cut, bench.recall_autocut = (round(float(np.mean(recall[name])), 4)
                                                                  for name in ("uncut", "cut", "autocut"))
    absent_kept = [len(found) for _, found in _ranked(encoder, index_dir, list(counts_of_a_shape()), 50,
                                                       RelevanceCut(autocut=True))]
    bench.autocut_kept_absent = round(float(np.mean(absent_kept)), 1)
    bench.ece_concept_pairs = round(expected_calibration_error(np.array(predicted), np.array(labels)), 4)
    bench.ece_concept_pairs_natural = round(expected_calibration_error(np.array(predicted), np.array(labels),
                                                                       even_odds=False), 4)
    bench.concept_pairs_cosine = _cosines_by_label(encoder, index_dir, list(asked), relevant)
    version = open_current(index_dir)
    mapping = version.manifest.calibration.maps["text-image"]
    version.close()
    bench.ece_caption_pairs = mapping.held_out_ece
    bench.calibration = mapping.model_dump()
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / "relevance-reliability.png"
    reliability_plot(np.array(predicted), np.array(labels, dtype=float), plot)
    bench.reliability_plot = str(plot)


def _cosines_by_label(encoder: DualEncoder, index_dir: Path, texts: list[str], relevant: dict[str, set[str]]
                      ) -> dict:
    """Whether a cosine can tell the concept pairs' matches from the others at all (lab notes: it cannot)."""
    matches, others = [], []
    for text, found in _ranked(encoder, index_dir, texts, TOP, RelevanceCut()):
        for each in found:
            (matches if each.hit.path in relevant[text] else others).append(each.hit.score)
    return {"matches": round(float(np.mean(matches)), 4), "others": round(float(np.mean(others)), 4) if others
            else None, "share_of_matches": round(len(matches) / max(len(matches) + len(others), 1), 4)}


def _without_captions(encoder: DualEncoder, index_dir: Path) -> dict:
    version = open_current(index_dir)
    try:
        maps = version.manifest.calibration.maps
    finally:
        version.close()
    grid = np.linspace(-1, 1, 2001)
    checks = {key: {"method": mapping.method,
                    "monotone": bool(np.all(np.diff(mapping.relevance(grid)) >= 0)),
                    "bounded": bool(np.all((mapping.relevance(grid) >= 0) & (mapping.relevance(grid) <= 1)))}
              for key, mapping in maps.items()}
    [(_, found)] = list(_ranked(encoder, index_dir, ["a star"], 50, RelevanceCut()))
    values = [each.relevance for each in found]
    return {"model": f"{encoder.identity.model} (pretrained {encoder.identity.pretrained})", "maps": checks,
            "a_star_top50_relevance": [round(min(values), 4), round(max(values), 4)],
            "top50_sorted": values == sorted(values, reverse=True)}


def reliability_plot(predicted: np.ndarray, labels: np.ndarray, path: Path, bins: int = 10) -> None:
    """Observed share of matches (at even odds) against the predicted relevance, per bin, with the diagonal."""
    size, margin = 420, 50
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    span = size - 2 * margin

    def at(x: float, y: float) -> tuple[float, float]:
        return margin + x * span, size - margin - y * span

    draw.rectangle([at(0, 1), at(1, 0)], outline="black")
    draw.line([at(0, 0), at(1, 1)], fill=(160, 160, 160), width=1)
    weight = np.where(labels > 0, 0.5 / max(labels.sum(), 1), 0.5 / max(len(labels) - labels.sum(), 1))
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            observed = float(np.average(labels[chosen], weights=weight[chosen]))
            draw.rectangle([at(index / bins + 0.01, observed), at((index + 1) / bins - 0.01, 0)],
                           fill=(70, 110, 200))
    for tick in (0, 0.5, 1):
        draw.text((at(tick, 0)[0] - 6, size - margin + 8), f"{tick:g}", fill="black")
        draw.text((margin - 28, at(0, tick)[1] - 6), f"{tick:g}", fill="black")
    draw.text((margin, 15), "relevance (x) vs observed share of matches (y)", fill="black")
    image.save(path)
