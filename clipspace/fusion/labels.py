"""Zero-shot labels: each label through a small ensemble of prompt templates, softmax at the model's own scale."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipspace.errors import InvalidQuery

log = logging.getLogger(__name__)

# Generic phrasings around an object; a model may ship its own ensemble (TEMPLATES_FILE beside its weights), as
# CLIP's prompt engineering is tuned per domain: the embedded model's adds the nuisance attribute its world varies.
TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "en": ("a {}", "a picture of a {}", "an image with a {}", "there is a {}"),
    "zh": ("一个{}", "有一个{}", "一个{}的图片"),
}
TEMPLATES_FILE = "zero_shot_templates.json"
MAX_LABELS = 256
PLACEHOLDER = "{}"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

EmbedTexts = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


def language_of(label: str) -> str:
    """`zh` for a label written with CJK characters, else `en`: it picks the template ensemble."""
    return "zh" if _CJK.search(label) else "en"


def prompts_for(label: str, template: str | None = None,
                ensembles: Mapping[str, Sequence[str]] = TEMPLATES) -> list[str]:
    """The texts that stand for a label: the caller's one template, or its language's ensemble."""
    templates = (template,) if template else ensembles[language_of(label)]
    return [t.replace(PLACEHOLDER, label) for t in templates]


def model_templates(folder: Path | None) -> Mapping[str, tuple[str, ...]]:
    """The model's own ensembles (TEMPLATES_FILE in its folder, per language) over the generic ones."""
    path = None if folder is None else Path(folder) / TEMPLATES_FILE
    if path is None or not path.is_file():
        return TEMPLATES
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        ensembles = {language: tuple(found.get(language, TEMPLATES[language])) for language in TEMPLATES}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        log.warning("ignoring %s (%s): the generic templates are used", path, error)
        return TEMPLATES
    if not all(ensemble and all(t.count(PLACEHOLDER) == 1 for t in ensemble) for ensemble in ensembles.values()):
        log.warning("ignoring %s: every template needs exactly one %s", path, PLACEHOLDER)
        return TEMPLATES
    return ensembles


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


async def classify(labels: Sequence[str], image_vector: Callable[[], Awaitable[np.ndarray]], embed_texts: EmbedTexts,
                   logit_scale: float, template: str | None = None,
                   ensembles: Mapping[str, Sequence[str]] = TEMPLATES) -> list[LabelScore]:
    """Rank `labels` for one image: prompts → text vectors → one vector per label → softmax.

    Awaitable, as a service embeds on its model thread. The labels are checked before anything is embedded,
    then the image's vector is asked for, then the prompts'.
    """
    check_labels(labels, template)
    prompts = [prompts_for(label, template, ensembles) for label in labels]
    image = await image_vector()
    vectors = label_vectors(await embed_texts([p for group in prompts for p in group]), [len(p) for p in prompts])
    return rank_labels(image, labels, vectors, logit_scale)
