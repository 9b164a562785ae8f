"""Train the cross-attention matcher and the concatenation baseline over a frozen dual encoder.

Top to bottom: load the encoder → render scenes and their hard-negative twins and encode them once →
train both scorers on the cached features (binary cross-entropy, the twin's caption and another scene's
caption as negatives) → validate binding accuracy → write both files beside the model.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipspace.align.train import learning_rate
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.fusion.beside import CONCAT_FILE, MATCHER_FILE, model_folder
from clipspace.fusion.features import LANGUAGES, TwinFeatures, twin_features
from clipspace.fusion.matcher import (
    ConcatMLP,
    CrossAttentionMatcher,
    MatcherConfig,
    load_scorer,
    save_scorer,
)
from clipspace.fusion.scoring import binding_accuracy, concat_scorer, matcher_scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatcherOptions:
    """Everything a matcher run depends on; saved in the matcher file's card."""

    model: str  # the frozen dual encoder, e.g. local-dir:data/models/clipspace-shapes-v5
    pretrained: str | None = None
    out: str | None = None  # folder for matcher.safetensors + concat-mlp.safetensors (default: the model's)
    scenes: int = 3000  # train-split scenes, each with one twin
    val_scenes: int = 500  # val-split two-object scenes with a colour-swapped twin
    seed: int = 11  # world seed of the training scenes (the dual encoder trained on seed 0)
    val_seed: int = 12
    steps: int = 800
    batch_size: int = 24  # scene/twin pairs per step; each gives 6 scored (image, caption) pairs
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 60
    width: int = 64
    heads: int = 2
    layers: int = 2
    mlp_steps: int = 600
    threads: int | None = None
    render_size: int = 128
    families: bool = False  # caption each training pair in a family where its twin is a negative (phrasings)
    randomised: float = 0.0  # fraction of training pairs drawn by the domain-randomised renderer
    image_pool: int = 0  # the matcher pools the 6x6 cells to image_pool x image_pool (0: reads all tokens)
    dedupe: bool = False  # embed each step's distinct images once rather than once per scored pair
    swap_share: float | None = None  # with families: the family drawn first, a swap twin with this chance
    init: str | None = None  # a matcher file of the same shape to start from (e.g. one trained on canonical captions)


@dataclass(frozen=True)
class MatcherResult:
    matcher: Path
    concat: Path
    seconds: float
    validation: dict[str, dict[str, float]]


def train_matchers(opts: MatcherOptions, progress: bool = True) -> MatcherResult:
    started = time.perf_counter()
    if opts.init and not Path(opts.init).is_file():  # before minutes of encoding, not after
        raise FileNotFoundError(f"{opts.init}: no matcher to start from; train the stage before it first "
                                f"(matcher-shapes-v7.json starts from matcher-shapes-v7-canonical.json's)")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    encoder = load_encoder(ModelSpec(opts.model, opts.pretrained, precision="fp32"))
    out = Path(opts.out) if opts.out else model_folder(encoder)
    if out is None:
        raise ValueError(f"{opts.model} is not a local-dir: model: say where the matcher goes with --out")

    # data: encoded once; the dual encoder is not touched again
    train_set = twin_features(encoder, opts.scenes, opts.seed, "train", progress=progress, families=opts.families,
                              randomised=opts.randomised, swap_share=opts.swap_share)
    val_set = twin_features(encoder, opts.val_scenes, opts.val_seed, "val", ("colour_swap",), 2, progress=progress)
    log.info("features ready after %.0f s", time.perf_counter() - started)

    # models
    matcher = CrossAttentionMatcher(MatcherConfig(
        "cross-attention", encoder.fingerprint, image_width=train_set.patches.shape[2],
        image_tokens=train_set.patches.shape[1], text_width=train_set.text["en"].states.shape[2],
        width=opts.width, heads=opts.heads, layers=opts.layers, image_pool=opts.image_pool))
    if opts.init:
        start = load_scorer(Path(opts.init), encoder.fingerprint)
        if start.config != matcher.config:
            raise ValueError(f"{opts.init} is a matcher of another shape ({start.config}); it cannot start this one")
        matcher.load_state_dict(start.state_dict())
    concat = ConcatMLP(MatcherConfig("concat-mlp", encoder.fingerprint, embed_dim=encoder.dim, width=opts.width))

    # steps
    fit(concat, opts, opts.mlp_steps, _twin_batches(concat, train_set, opts.batch_size, _pooled_logits),
        "concat-mlp", progress)
    fit(matcher, opts, opts.steps, _twin_batches(matcher, train_set, opts.batch_size,
                                                 _deduped_token_logits if opts.dedupe else _token_logits),
        "cross-attention", progress)

    # validate, write
    validation = binding_accuracy(val_set, {"concat-mlp": concat_scorer(concat.eval()),
                                            "cross-attention": matcher_scorer(matcher.eval())})
    seconds = time.perf_counter() - started
    card = {"options": asdict(opts), "seconds": round(seconds, 1), "val_binding_accuracy": validation,
            "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "encoder": encoder.spec.model}
    paths = (save_scorer(matcher, out / MATCHER_FILE, card), save_scorer(concat, out / CONCAT_FILE, card))
    log.info("wrote %s and %s (val binding accuracy %s)", *paths, validation)
    return MatcherResult(paths[0], paths[1], time.perf_counter() - started, validation)


def training_pairs(rng: np.random.Generator, n: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image rows, caption rows and labels for one step over `batch` scene/twin pairs.

    Per pair: each image with its own caption (match), with its twin's caption (the hard negative), and
    with the caption of another scene (an easy negative, so scores stay meaningful far from the twin).
    """
    scene = rng.choice(n, size=batch, replace=False)
    twin = scene + n
    other = np.roll(scene, 1)
    images = np.concatenate([scene, twin, scene, twin, scene, twin])
    captions = np.concatenate([scene, twin, twin, scene, other, other + n])
    labels = np.concatenate([np.ones(2 * batch), np.zeros(4 * batch)])
    return images, captions, labels.astype(np.float32)


def _pooled_logits(model: ConcatMLP, data: TwinFeatures, language: str, images: np.ndarray,
                   captions: np.ndarray) -> torch.Tensor:
    return model(data.image_pooled[images], data.text[language].pooled[captions])


def _token_logits(model: CrossAttentionMatcher, data: TwinFeatures, language: str, images: np.ndarray,
                  captions: np.ndarray) -> torch.Tensor:
    text = data.text[language]
    length = int(text.mask[captions].sum(dim=1).max())
    return model(data.patches[images].float(), text.states[captions, :length].float(), text.mask[captions, :length])


def _deduped_token_logits(model: CrossAttentionMatcher, data: TwinFeatures, language: str, images: np.ndarray,
                          captions: np.ndarray) -> torch.Tensor:
    text = data.text[language]
    length = int(text.mask[captions].sum(dim=1).max())
    distinct, rows = np.unique(images, return_inverse=True)
    return model(data.patches[distinct].float(), text.states[captions, :length].float(),
                 text.mask[captions, :length], torch.from_numpy(rows))


def _twin_batches(model: torch.nn.Module, data: TwinFeatures, batch: int, logits_of) -> Batches:
    """`training_pairs` steps over scenes and their twins, languages alternating step by step."""
    def draw(rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, captions, labels = training_pairs(rng, data.n, batch)
        logits = logits_of(model, data, LANGUAGES[step % len(LANGUAGES)], images, captions)
        return logits, torch.from_numpy(labels)
    return draw


# (rng, step) -> (logits, labels) of one step's scored pairs
Batches = Callable[[np.random.Generator, int], tuple[torch.Tensor, torch.Tensor]]


def fit(model: torch.nn.Module, opts: MatcherOptions, steps: int, batches: Batches, name: str,
        progress: bool) -> None:
    """AdamW with warm-up and cosine decay over binary cross-entropy; `opts` gives lr, weight decay, warm-up, seed."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    rng = np.random.default_rng(opts.seed)
    model.train()
    bar = tqdm(range(steps), desc=name, disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, opts.lr, opts.warmup_steps)
        logits, labels = batches(rng, step)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
