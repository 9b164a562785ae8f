"""Zero-shot labels: each label through a small ensemble of prompt templates, softmax at the model's own scale."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipspace.errors import InvalidQuery

# The phrasings the world's captions use around an object ("a picture of ...", "there is ..."), as CLIP's
# prompt-engineering advice says to mirror the training captions: the best of the sets tried on the
# world's val split (docs/decisions.md).
TEMPLATES = {
    "en": ("a {}", "a picture of a {}", "an image with a {}", "there is a {}"),
    "zh": ("一个{}", "有一个{}", "一个{}的图片"),
}
MAX_LABELS = 256
PLACEHOLDER = "{}"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

EmbedTexts = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


def language_of(label: str) -> str:
    """`zh` for a label written with CJK characters, else `en`: it picks the template ensemble."""
    return "zh" if _CJK.search(label) else "en"


def prompts_for(label: str, template: str | None = None) -> list[str]:
    """The texts that stand for a label: the caller's one template, or its language's ensemble."""
    templates = (template,) if template else TEMPLATES[language_of(label)]
    return [t.replace(PLACEHOLDER, label) for t in templates]


def check_labels(labels: Sequence[str], template: str | None) -> None:
    """Refuse what cannot be ranked: no labels, duplicates, too many, or a template without `{}`."""
    if not labels:
        raise InvalidQuery("give at least one label")
    if len(labels) > MAX_LABELS:
        raise InvalidQuery(f"at most {MAX_LABELS} labels, not {len(labels)}")
    if len(set(labels)) != len(labels):
        raise InvalidQuery("labels must be distinct")
    if template is not None and template.count(PLACEHOLDER) != 1:
        raise InvalidQuery(f"the template must hold exactly one {PLACEHOLDER}, where the label goes")


def label_vectors(prompt_vectors: np.ndarray, prompts_per_label: Sequence[int]) -> np.ndarray:
    """One unit vector per label: the mean of its prompts' unit vectors, renormalised (CLIP's ensembling)."""
    ends = np.cumsum(prompts_per_label)
    means = np.stack([prompt_vectors[end - n:end].mean(axis=0) for end, n in zip(ends, prompts_per_label,
                                                                                  strict=True)])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def rank_labels(image_vector: np.ndarray, labels: Sequence[str], vectors: np.ndarray,
                logit_scale: float) -> list[LabelScore]:
    """Softmax over `logit_scale` x cosine, the scale the model was trained with; highest first."""
    logits = logit_scale * (vectors @ np.asarray(image_vector, dtype=np.float32))
    logits = logits - logits.max()
    probabilities = np.exp(logits) / np.exp(logits).sum()
    order = np.argsort(-probabilities, kind="stable")
    return [LabelScore(labels[i], float(probabilities[i])) for i in order]


def classify(image_vector: np.ndarray, labels: Sequence[str], embed_texts: EmbedTexts, logit_scale: float,
             template: str | None = None) -> list[LabelScore]:
    """Rank `labels` for one image vector: prompts → text vectors → one vector per label → softmax."""
    check_labels(labels, template)
    prompts = [prompts_for(label, template) for label in labels]
    vectors = label_vectors(embed_texts([p for group in prompts for p in group]), [len(p) for p in prompts])
    return rank_labels(image_vector, labels, vectors, logit_scale)
