"""The fusion evaluation: composed queries, zero-shot shapes, and the binding table of three scorers.

Every number comes from fresh world scenes of the `test` split, drawn with seeds that matcher training
never uses, rendered at the size `world` writes PNGs and preprocessed as the service does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clipspace.align import world
from clipspace.align.evaluate import precision_at_k
from clipspace.encoder import DualEncoder
from clipspace.fusion import labels as zero_shot
from clipspace.fusion.beside import CONCAT_FILE, MATCHER_FILE, RERANK_DEPTH, model_folder
from clipspace.fusion.features import LANGUAGES, TwinFeatures, encode_scenes, twin_features
from clipspace.fusion.matcher import ConcatMLP, CrossAttentionMatcher, load_scorer
from clipspace.fusion.query import combine
from clipspace.fusion.rerank import combined_score

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

Scorer = Callable[[TwinFeatures, str, np.ndarray, np.ndarray], np.ndarray]


def cosine_scorer(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
    pooled = features.text[language].pooled
    return (features.image_pooled[images] * pooled[captions]).sum(dim=-1).numpy()


def concat_scorer(mlp: ConcatMLP) -> Scorer:
    def score(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mlp(features.image_pooled[images], features.text[language].pooled[captions]).numpy()
    return score


def matcher_scorer(matcher: CrossAttentionMatcher, batch: int = 512) -> Scorer:
    def score(features: TwinFeatures, language: str, images: np.ndarray, captions: np.ndarray) -> np.ndarray:
        text = features.text[language]
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                rows, caps = images[start:start + batch], captions[start:start + batch]
                length = int(text.mask[caps].sum(dim=1).max())
                out.append(matcher(features.patches[rows].float(), text.states[caps, :length].float(),
                                   text.mask[caps, :length]).numpy())
        return np.concatenate(out)
    return score


def binding_accuracy(features: TwinFeatures, scorers: dict[str, Scorer]) -> dict[str, dict[str, float]]:
    """Does a scene's caption score its own image above its twin's image? Chance is 0.5 (ties count half)."""
    n = features.n
    own, twin = np.arange(n), np.arange(n) + n
    table: dict[str, dict[str, float]] = {}
    for name, scorer in scorers.items():
        table[name] = {}
        for language in LANGUAGES:
            right, wrong = scorer(features, language, own, own), scorer(features, language, twin, own)
            table[name][language] = float(np.mean((right > wrong) + 0.5 * (right == wrong)))
    return table


def rerank_recall(features: TwinFeatures, scorers: dict[str, Scorer], depth: int) -> dict[str, dict[str, float]]:
    """Text→image R@1 of every gallery image's caption, scenes and twins together: cosine over the whole
    gallery, then each other scorer re-ranking cosine's top `depth` as the service does (`combined_score`).
    An image whose caption is identical to the query's counts as a hit (the caption cannot tell them apart)."""
    n_images = 2 * features.n
    table: dict[str, dict[str, float]] = {name: {} for name in scorers}
    for language in LANGUAGES:
        captions = features.captions(language)
        owner = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
        caption_ids = np.array([owner[c] for c in captions])
        text = features.text[language].pooled
        cosine = (text @ features.image_pooled.T).numpy()
        top = np.argsort(-cosine, axis=1, kind="stable")[:, :depth]
        for name, scorer in scorers.items():
            hits = []
            for query in range(n_images):
                candidates = top[query]
                if name == "cosine":
                    best = candidates[0]
                else:
                    logits = scorer(features, language, candidates, np.full(len(candidates), query))
                    best = candidates[int(np.argmax(combined_score(logits, cosine[query, candidates])))]
                hits.append(caption_ids[best] == caption_ids[query])
            table[name][language] = float(np.mean(hits))
    return table


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
    """Everything: composed queries, zero-shot shapes, and the binding table of the three scorers."""
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
            "binding": binding_report(encoder, scorers, opts, progress)}


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
    return "\n".join(lines)
