"""The fusion evaluation: composed queries, zero-shot shapes, and the binding table of three scorers.

Every number comes from fresh world scenes of the `test` split, drawn with seeds that matcher training
never uses, rendered at the size `world` writes PNGs and preprocessed as the service does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clipspace.align import world
from clipspace.align.evaluate import precision_at_k
from clipspace.encoder import DualEncoder
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.beside import CONCAT_FILE, MATCHER_FILE, RERANK_DEPTH, model_folder
from clipspace.fusion.family_eval import family_table, render_family_table
from clipspace.fusion.features import LANGUAGES, encode_scenes, twin_features
from clipspace.fusion.matcher import load_scorer
from clipspace.fusion.query import combine
from clipspace.fusion.scoring import (
    Scorer,
    binding_accuracy,
    concat_scorer,
    cosine_scorer,
    matcher_scorer,
    rerank_recall,
)

log = logging.getLogger(__name__)

# The label vocabulary a user would type; the world draws its own captions, this is only the question.
SHAPE_LABELS = {"en": {shape: shape for shape in world.SHAPES},
                "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
                       "cross": "十字形", "hexagon": "六边形"}}
COLOUR_WORDS = {"en": {colour: colour for colour in world.COLOURS},
                "zh": {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
                       "purple": "紫色", "pink": "粉色", "black": "黑色"}}


@dataclass(frozen=True)
class EvalOptions:
    composed_gallery: int = 1000
    composed_queries: int = 300
    classify_scenes: int = 3000  # single-object scenes: ~0.004 standard error at 0.95 (600 gave ~0.009)
    binding_pairs: int = 1000  # two-object scenes, each with its colour-swapped twin
    gallery_scenes: int = 600  # binding queries: scenes + colour-swapped twins = 1,200 gallery images
    seed: int = 7001  # fresh: matcher training uses the train split, validation the val split
    rerank_depth: int = RERANK_DEPTH
    family_scenes: int = 400  # two-object scenes drawn by the held-out renderer for the per-family table (0: none)


# ------------------------------------------------------------------------------------------- composed queries

def composed_queries(encoder: DualEncoder, opts: EvalOptions, progress: bool = True) -> dict[str, object]:
    """Query = image of shape S in colour A + text(colour B) − text(colour A); relevant = gallery scenes with
    an S in colour B. Precision@10 of the composed query against the image alone and the text alone."""
    gallery = [world.sample_scene(opts.seed, "test", i) for i in range(opts.composed_gallery)]
    _, gallery_vectors = encode_scenes(encoder, gallery, progress=progress)
    singles = _single_object_scenes(opts.seed + 1, opts.composed_queries)
    _, query_vectors = encode_scenes(encoder, singles, progress=progress)
    rng = np.random.default_rng(opts.seed)
    report: dict[str, object] = {"gallery": len(gallery), "queries": len(singles)}
    for language in LANGUAGES:
        words = COLOUR_WORDS[language]
        colour_vectors = dict(zip(words, encoder.embed_texts(list(words.values())), strict=True))
        queries: dict[str, list[np.ndarray]] = {"image alone": [], "text alone": [], "image + text(B)": [],
                                                "composed": []}
        relevant = []
        for scene, image in zip(singles, query_vectors.numpy(), strict=True):
            obj = scene.objects[0]
            target = world.COLOURS[int(rng.integers(len(world.COLOURS) - 1))]
            target = target if target != obj.colour else world.COLOURS[-1]
            relevant.append([any(o.shape == obj.shape and o.colour == target for o in g.objects) for g in gallery])
            plus, minus = colour_vectors[target], colour_vectors[obj.colour]
            queries["image alone"].append(image)
            queries["text alone"].append(plus)
            queries["image + text(B)"].append(combine([image, plus], [1.0, 1.0]))
            queries["composed"].append(combine([image, plus, minus], [1.0, 1.0, -1.0]))
        relevant = np.array(relevant)
        report[language] = {name: float(np.nanmean(precision_at_k(np.stack(vectors) @ gallery_vectors.numpy().T,
                                                                   relevant)))
                            for name, vectors in queries.items()}
    return report


def _single_object_scenes(seed: int, n: int) -> list[world.Scene]:
    scenes, index = [], 0
    while len(scenes) < n:
        scene = world.sample_scene(seed, "test", index)
        index += 1
        if len(scene.objects) == 1:
            scenes.append(scene)
    return scenes


# ------------------------------------------------------------------------------------------------- classify

def classify_accuracy(encoder: DualEncoder, opts: EvalOptions, progress: bool = True) -> dict[str, object]:
    """Shape accuracy on single-object scenes with the default template ensemble, English and Chinese labels."""
    scenes = _single_object_scenes(opts.seed + 2, opts.classify_scenes)
    _, vectors = encode_scenes(encoder, scenes, progress=progress)
    scale = float(encoder.model.logit_scale.detach().float().exp())
    ensembles = zero_shot.model_templates(model_folder(encoder))
    report: dict[str, object] = {"scenes": len(scenes)}
    for language in LANGUAGES:
        names = SHAPE_LABELS[language]
        label_list = [names[shape] for shape in world.SHAPES]
        prompts = [zero_shot.prompts_for(label, ensembles=ensembles) for label in label_list]
        label_vectors = zero_shot.label_vectors(encoder.embed_texts([p for group in prompts for p in group]),
                                                [len(group) for group in prompts])
        correct = [zero_shot.rank_labels(vector, label_list, label_vectors, scale)[0].label
                   == names[scene.objects[0].shape] for vector, scene in zip(vectors.numpy(), scenes, strict=True)]
        report[language] = float(np.mean(correct))
    return report


# -------------------------------------------------------------------------------------------- binding table

def binding_report(encoder: DualEncoder, scorers: dict[str, Scorer], opts: EvalOptions,
                   progress: bool = True) -> dict[str, object]:
    pairs = twin_features(encoder, opts.binding_pairs, opts.seed + 3, "test", ("colour_swap",), 2,
                          progress=progress)
    gallery = twin_features(encoder, opts.gallery_scenes, opts.seed + 4, "test", ("colour_swap",), 2,
                            progress=progress)
    started = time.perf_counter()
    report = {"binding_pairs": pairs.n, "gallery_images": 2 * gallery.n, "rerank_depth": opts.rerank_depth,
              "binding_accuracy": binding_accuracy(pairs, scorers),
              "text_to_image_R@1": rerank_recall(gallery, scorers, opts.rerank_depth)}
    log.info("binding table scored in %.1f s", time.perf_counter() - started)
    return report


# ------------------------------------------------------------------------------------------------- report

def fusion_report(encoder: DualEncoder, matchers: Path, opts: EvalOptions, progress: bool = True) -> dict:
    """Everything: composed queries, zero-shot shapes, the binding table of the three scorers on the world's test
    split (canonical captions), and their per-family table on held-out renders."""
    scorers: dict[str, Scorer] = {"cosine": cosine_scorer}
    loaded = {}
    for name, file in (("concat-mlp", CONCAT_FILE), ("cross-attention", MATCHER_FILE)):
        path = matchers / file
        if path.is_file():
            loaded[name] = load_scorer(path, encoder.fingerprint)
            scorers[name] = (concat_scorer if name == "concat-mlp" else matcher_scorer)(loaded[name])
        else:
            log.warning("no %s at %s: left out of the table", name, path)
    return {"model": encoder.spec.model, "fingerprint": encoder.fingerprint, "options": asdict(opts),
            "scorer_bytes": {name: (matchers / file).stat().st_size for name, file in
                             (("concat-mlp", CONCAT_FILE), ("cross-attention", MATCHER_FILE)) if name in loaded},
            "composed": composed_queries(encoder, opts, progress),
            "classify": classify_accuracy(encoder, opts, progress),
            "binding": binding_report(encoder, scorers, opts, progress),
            "phrasing": family_table(encoder, scorers, opts.family_scenes, opts.seed + 5, opts.rerank_depth, progress)
            if opts.family_scenes else None}


def render_report(report: dict) -> str:
    """The report as the tables the README and the model card quote."""
    composed, classify, binding = report["composed"], report["classify"], report["binding"]
    lines = [f"model {report['model']} ({report['fingerprint']}), test-split seed {report['options']['seed']}", "",
             f"Composed queries: precision@10 for 'shape S in colour B', {composed['queries']} queries over "
             f"{composed['gallery']} scenes",
             "| query | en | zh |", "|---|---|---|"]
    lines += [f"| {name} | {composed['en'][name]:.3f} | {composed['zh'][name]:.3f} |" for name in composed["en"]]
    lines += ["", f"Zero-shot shapes (the model's template ensembles), {classify['scenes']} single-object scenes: "
                  f"accuracy en {classify['en']:.3f}, zh {classify['zh']:.3f}", "",
              f"Binding: {binding['binding_pairs']} two-object scenes vs their colour-swapped twins (chance 0.5); "
              f"R@1 over {binding['gallery_images']} images (scenes + twins), re-ranking the cosine top "
              f"{binding['rerank_depth']}",
              "| scorer | binding acc en | binding acc zh | t→i R@1 en | t→i R@1 zh |", "|---|---|---|---|---|"]
    accuracy, recall = binding["binding_accuracy"], binding["text_to_image_R@1"]
    lines += [f"| {name} | {accuracy[name]['en']:.3f} | {accuracy[name]['zh']:.3f} | {recall[name]['en']:.3f} | "
              f"{recall[name]['zh']:.3f} |" for name in accuracy]
    if report.get("phrasing"):
        lines += ["", *render_family_table(report["phrasing"])]
    return "\n".join(lines)
