"""Keyword channel, vector channel and both fusions: MRR@10 per query kind on a generated world whose words are known.

The corpus is world scenes (clipspace.align.world) saved as `IMG_NNNN.png` in a few camera-like folders, each with
0-3 made-up place tags in its XMP `dc:subject` and, for half of them, the canonical caption as a sidecar. Four
query kinds, each with its ground truth:

- file name: the exact stem (`IMG_4821`); relevant: that file.
- tag: one tag word; relevant: every item that carries it.
- caption phrase: colour and shape as a caption says them ("red circle"), cut from a sidecar caption; relevant:
  every item whose *scene* holds that colour and shape, captioned or not.
- visual description: the same colour and shape in the world's other words for the shape ("a red disc", "a blue
  plus sign"), which the embedded model learned and no file carries: the keyword channel, which needs every word,
  finds nothing (checked), so only the pictures can answer. Relevant: as for the caption phrase. Triangles have
  no other word and are left out.

MRR@10: the mean over queries of 1 / rank of the first relevant result in the top 10 (0 if none).
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import faiss
import numpy as np
from PIL.PngImagePlugin import PngInfo

from benchmarks.report import progress
from clipspace.align import world
from clipspace.align.photo_metadata import xmp_packet
from clipspace.encoder import DualEncoder
from clipspace.index import channels
from clipspace.index.channels import Found, find, reciprocal_rank_fusion, relative_score_fusion
from clipspace.index.publish import open_current
from clipspace.index.records import SearchHit
from clipspace.index.version import IndexVersion
from index_builder.build import build_index
from index_builder.options import BuildOptions

DEPTH = 10  # a page: MRR is counted in the top 10, and each channel is asked for as many
FOLDERS = ("DCIM/100PHONE", "DCIM/101PHONE", "Scans", "Export")
TAG_COUNT = 150
CAPTIONED = 0.5  # share of items with a caption sidecar
IMAGE_SIZE = 128
# The world's second words for a size, a shape and a place: the model learned them, captions never use them.
OTHER_WORDS = {attribute: {value: words[1] for value, words in synonyms.items() if len(words) > 1}
               for attribute, synonyms in (("size", world._EN_SIZE_SYNONYMS), ("shape", world._EN_SHAPE_SYNONYMS),
                                           ("position", world._EN_POSITION_SYNONYMS))}
GOAL_GAP = 0.02  # issue 19: hybrid at least as good as the better channel on every kind, within this
KINDS = ("file name", "tag", "caption phrase", "visual description")
Fusion = Callable[[list[SearchHit], list[SearchHit], int], list[Found]]


@dataclass(frozen=True)
class Item:
    path: str
    scene: world.Scene
    tags: tuple[str, ...]
    captioned: bool


@dataclass(frozen=True)
class Query:
    kind: str
    text: str
    relevant: frozenset[str]  # paths


@dataclass(frozen=True)
class Method:
    """One column of the table: a mode of `channels.find` and, for hybrid, a fusion with its constants."""

    label: str
    mode: channels.Mode
    fusion: Fusion | None = None
    rrf_k: int = channels.RRF_K
    vector_weight: float = channels.VECTOR_WEIGHT

    @contextlib.contextmanager
    def constants(self) -> Iterator[None]:
        """channels' constants set to this method's for the duration (the fusions read them when called)."""
        with mock.patch.object(channels, "RRF_K", self.rrf_k), \
                mock.patch.object(channels, "VECTOR_WEIGHT", self.vector_weight):
            yield


# The shipped constants and the knobs around them: RRF's k cannot break the tie between the two lists' first
# results; the vector weight of relative score fusion can.
METHODS = (Method("vector", "vector"), Method("keyword", "keyword"),
           *(Method(f"rrf k={k}", "hybrid", reciprocal_rank_fusion, rrf_k=k) for k in (10, 60)),
           *(Method(f"relative w={w}", "hybrid", relative_score_fusion, vector_weight=w) for w in (0.3, 0.4, 0.5)))


def measure_keywords(encoder: DualEncoder, items: int, queries: int, seeds: int) -> dict:
    """MRR@10 of every method per query kind on `seeds` generated corpora (pooled, and per corpus), and the p50
    time of `channels.find` per method, on one thread (the query's text embedding is not in it)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        runs = [_measure_corpus(encoder, items, queries, seed) for seed in range(seeds)]
    finally:
        faiss.omp_set_num_threads(threads)
    methods = []
    for method in METHODS:
        ranks = [run[method.label] for run in runs]
        methods.append({
            "method": method.label, "mode": method.mode,
            "mrr": {kind: round(statistics.mean(rank for run in ranks for rank in run["rr"][kind]), 4)
                    for kind in KINDS},
            "mrr_per_corpus": {kind: [round(statistics.mean(run["rr"][kind]), 4) for run in ranks] for kind in KINDS},
            "p50_ms": round(statistics.median(second for run in ranks for second in run["seconds"]) * 1000, 3)})
    better = {kind: max(entry["mrr"][kind] for entry in methods if entry["mode"] != "hybrid") for kind in KINDS}
    return {"items": items, "corpora": seeds, "queries_per_kind": queries * seeds, "depth": DEPTH,
            "model": encoder.spec.model, "precision": encoder.spec.precision,
            "build_s": [run["build_s"] for run in runs], "shipped": {"RRF_K": channels.RRF_K,
                                                                      "VECTOR_WEIGHT": channels.VECTOR_WEIGHT},
            "methods": methods, "better_channel": better, "goal_gap": GOAL_GAP,
            "gaps": {entry["method"]: {kind: round(entry["mrr"][kind] - better[kind], 4) for kind in KINDS}
                     for entry in methods if entry["mode"] == "hybrid"}}


def _measure_corpus(encoder: DualEncoder, items: int, queries: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="clipspace-keywords-") as scratch:
        root, index = Path(scratch) / "corpus", Path(scratch) / "index"
        progress(f"keywords: corpus {seed}: writing {items} world scenes with names, tags and captions")
        corpus = write_corpus(root, items, seed)
        started = time.perf_counter()
        build_index(BuildOptions(images=root, index=index, progress=False, patch_tokens=False), encoder)
        build_s = round(time.perf_counter() - started, 1)
        version = open_current(index)
        try:
            asked = make_queries(corpus, queries, seed)
            _check_visual_queries_match_no_file(version, asked)
            vectors = encoder.embed_texts([query.text for query in asked])
            progress(f"keywords: corpus {seed}: {len(asked)} queries x {len(METHODS)} methods")
            return {"build_s": build_s, **{method.label: _ranks(version, asked, vectors, method)
                                           for method in METHODS}}
        finally:
            version.close()


def write_corpus(root: Path, count: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    tags = made_up_tags(TAG_COUNT, rng)
    numbers = rng.sample(range(1000, 10000), count)
    corpus = []
    for scene, number in zip(world.generate_scenes(count, seed, "test"), numbers, strict=True):
        item = Item(f"{rng.choice(FOLDERS)}/IMG_{number}.png", scene, tuple(rng.sample(tags, rng.randint(0, 3))),
                    rng.random() < CAPTIONED)
        path = root / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        info = PngInfo()
        if item.tags:
            info.add_itxt("XML:com.adobe.xmp", xmp_packet(*item.tags).decode())
        world.render_scene(scene, IMAGE_SIZE).save(path, pnginfo=info, compress_level=1)
        if item.captioned:
            path.with_suffix(".txt").write_text(world.canonical_caption(scene) + "\n", encoding="utf-8")
        corpus.append(item)
    return corpus


def made_up_tags(count: int, rng: random.Random) -> list[str]:
    """Place-like words of three syllables ("Ravolen"), none of them a word of a caption, name or folder."""
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ("", "n", "r", "s", "l")
    tags: set[str] = set()
    while len(tags) < count:
        tags.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(3)).capitalize() + rng.choice(codas))
    return sorted(tags)


def make_queries(corpus: list[Item], per_kind: int, seed: int) -> list[Query]:
    rng = random.Random(seed + 1)
    holding: dict[world.SceneObject, set[str]] = {}
    for item in corpus:
        for thing in item.scene.objects:
            holding.setdefault(thing, set()).add(item.path)
    asked = [Query("file name", Path(item.path).stem, frozenset({item.path}))
             for item in rng.sample(corpus, per_kind)]
    tagged: dict[str, set[str]] = {}
    for item in corpus:
        for tag in item.tags:
            tagged.setdefault(tag, set()).add(item.path)
    asked += [Query("tag", tag.lower(), frozenset(tagged[tag]))
              for tag in rng.sample(sorted(tagged), min(per_kind, len(tagged)))]
    for item in rng.sample([item for item in corpus if item.captioned], per_kind):
        thing = rng.choice(item.scene.objects)
        asked.append(Query("caption phrase", f"{thing.size} {thing.colour} {thing.shape} "
                           f"{world._EN_POSITION[thing.position]}", frozenset(holding[thing])))
    visual = [item for item in corpus if any(obj.shape in OTHER_WORDS['shape'] for obj in item.scene.objects)]
    for item in rng.sample(visual, per_kind):
        thing = rng.choice([obj for obj in item.scene.objects if obj.shape in OTHER_WORDS['shape']])
        asked.append(Query("visual description", f"a {OTHER_WORDS['size'][thing.size]} {thing.colour} "
                           f"{OTHER_WORDS['shape'][thing.shape]} {OTHER_WORDS['position'][thing.position]}",
                           frozenset(holding[thing])))
    return asked


def _check_visual_queries_match_no_file(version: IndexVersion, asked: list[Query]) -> None:
    matched = [query.text for query in asked
               if query.kind == "visual description" and version.keyword_search(query.text, 1)]
    if matched:
        raise RuntimeError(f"visual descriptions that some file's words match: {matched[:3]}")


def _ranks(version: IndexVersion, asked: list[Query], vectors: np.ndarray, method: Method) -> dict:
    """Per kind, each query's reciprocal rank of its first relevant result in the top DEPTH; each call's time."""
    reciprocal: dict[str, list[float]] = {kind: [] for kind in KINDS}
    seconds: list[float] = []
    with method.constants():
        for query, vector in zip(asked, vectors, strict=True):
            started = time.perf_counter()
            found = find(version, vector, query.text, DEPTH, mode=method.mode, fusion=method.fusion)
            seconds.append(time.perf_counter() - started)
            ranks = [rank for rank, result in enumerate(found, 1) if result.hit.path in query.relevant]
            reciprocal[query.kind].append(1 / ranks[0] if ranks else 0.0)
    return {"rr": reciprocal, "seconds": seconds}
