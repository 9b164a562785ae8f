"""Train a cross-attention matcher for any open_clip model from a folder of captioned images.

The world's matcher learns from rendered twins; a user's folder has none, so its hard negatives are the captions
rewritten (clipspace.fusion.negatives: attributes swapped, relations reversed, counts changed). Top to bottom:
read the pairs (the sidecars the trainer reads: `x.jpg` + `x.txt`, or `captions.jsonl`) → each caption's negatives
→ images and captions through the frozen encoder once → train on the cached tokens (own caption 1; one of its
negatives and another image's caption 0) → validate on held-out images → write matcher.safetensors beside the
index, where the service looks for this model's matcher (clipspace.fusion.beside.matcher_file).
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipspace.align.datasets import CaptionedImage, read_pairs
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder
from clipspace.fusion.beside import MATCHER_FILE, index_matcher_folder
from clipspace.fusion.features import encode_captions
from clipspace.fusion.matcher import CrossAttentionMatcher, MatcherConfig, save_scorer
from clipspace.fusion.negatives import KINDS, load_lexicon, text_negatives
from clipspace.fusion.tokens import TextTokens, image_tokens
from clipspace.fusion.train import fit
from clipspace.images import load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderMatcherOptions:
    """Everything a folder-trained matcher depends on; saved in the matcher file's card."""

    corpus: str  # images with caption sidecars (x.jpg + x.txt) or a captions.jsonl
    model: str  # any open_clip model: ViT-B-32, hf-hub:…, local-dir:…
    pretrained: str | None = None
    index: str | None = None  # the index the service serves: the matcher goes to INDEX/matchers/<fingerprint>/
    out: str | None = None  # or this folder instead
    steps: int = 2000
    batch_size: int = 32  # images per step; each gives its own caption, one negative and another image's caption
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 60
    width: int = 96
    heads: int = 4
    layers: int = 2
    val_fraction: float = 0.1  # images held out to validate on (at least one)
    seed: int = 11
    threads: int | None = None


@dataclass(frozen=True)
class FolderFeatures:
    """Pair i is image images[i] with caption row i of `text`; negatives[i] lists the rows of its negatives, after
    the n captions. An image captioned twice (in two languages, say) is encoded once."""

    patches: torch.Tensor  # (distinct images, tokens, width) float16
    images: np.ndarray  # (n,) pair -> row of patches
    text: TextTokens  # states float16
    caption_ids: np.ndarray  # (rows,) one id per distinct text: another image's caption may read the same
    negatives: list[list[int]]
    kinds: dict[int, str]  # row -> negative kind

    @property
    def n(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class FolderResult:
    matcher: Path
    seconds: float
    pairs: int
    negatives: dict[str, int]  # per kind, over the whole corpus; "none": captions with nothing to negate
    validation: dict[str, float]


def train_folder_matcher(opts: FolderMatcherOptions, progress: bool = True) -> FolderResult:
    started = time.perf_counter()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    if opts.out is None and opts.index is None:
        raise ValueError("say where the matcher goes: --index (the served index) or --out")
    encoder = load_encoder(ModelSpec(opts.model, opts.pretrained, precision="fp32"))
    out = Path(opts.out) if opts.out else index_matcher_folder(Path(opts.index), encoder.fingerprint)

    # data: negatives from the captions, then everything encoded once
    pairs = read_pairs(Path(opts.corpus))
    rng = np.random.default_rng(opts.seed)
    features, counts = folder_features(encoder, pairs, rng, progress)
    distinct = len(features.patches)
    held = rng.permutation(distinct)[:max(1, round(opts.val_fraction * distinct)) if distinct > 1 else 0]
    validating = np.isin(features.images, held)  # by image: its other captions are held out with it
    val_rows, train_rows = np.flatnonzero(validating), np.flatnonzero(~validating)
    log.info("%d pairs (%d to validate on), negatives %s; encoded after %.0f s", features.n, len(val_rows), counts,
             time.perf_counter() - started)

    # model, steps
    matcher = CrossAttentionMatcher(MatcherConfig(
        "cross-attention", encoder.fingerprint, image_width=features.patches.shape[2],
        image_tokens=features.patches.shape[1], text_width=features.text.states.shape[2],
        width=opts.width, heads=opts.heads, layers=opts.layers))
    fit(matcher, opts, opts.steps, _folder_batches(matcher, features, train_rows, opts.batch_size),
        "cross-attention", progress)

    # validate, write
    validation = negative_accuracy(matcher, features, val_rows)
    seconds = time.perf_counter() - started
    card = {"options": asdict(opts), "seconds": round(seconds, 1), "pairs": features.n, "negatives": counts,
            "val_negative_accuracy": validation, "torch_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "encoder": encoder.spec.model,
            "negatives_from": "caption text (clipspace.fusion.negatives, " + load_lexicon().source + ")"}
    path = save_scorer(matcher, out / MATCHER_FILE, card)
    log.info("wrote %s (held-out images: own caption above its negatives %s)", path, validation)
    return FolderResult(path, time.perf_counter() - started, features.n, counts, validation)


def folder_features(encoder: DualEncoder, pairs: list[CaptionedImage], rng: np.random.Generator,
                    progress: bool = True, batch: int = 64) -> tuple[FolderFeatures, dict[str, int]]:
    """Each caption's negatives, then patch tokens of every image and token states of every caption."""
    captions = [pair.caption for pair in pairs]
    negatives, kinds, counts = [], {}, Counter({kind: 0 for kind in (*KINDS, "none")})
    for caption in [pair.caption for pair in pairs]:
        made = text_negatives(caption, rng)
        counts.update([negative.kind for negative in made] or ["none"])
        rows = list(range(len(captions), len(captions) + len(made)))
        kinds.update(zip(rows, [negative.kind for negative in made], strict=True))
        captions += [negative.text for negative in made]
        negatives.append(rows)
    files = list(dict.fromkeys(pair.path for pair in pairs))
    patches = []
    for start in tqdm(range(0, len(files), batch), desc="images", disable=not progress, dynamic_ncols=True):
        pixels = torch.stack([encoder.preprocess(load_image(path)) for path in files[start:start + batch]])
        patches.append(image_tokens(encoder, pixels).patches.half())
    rows = {path: i for i, path in enumerate(files)}
    ids = {text: i for i, text in enumerate(dict.fromkeys(captions))}
    return (FolderFeatures(torch.cat(patches), np.array([rows[pair.path] for pair in pairs]),
                           encode_captions(encoder, captions), np.array([ids[c] for c in captions]), negatives, kinds),
            dict(counts))


def _folder_batches(matcher: CrossAttentionMatcher, data: FolderFeatures, rows: np.ndarray, batch: int):
    """Per pair: its image with its own caption (1), with one of the caption's negatives drawn at random (0) when it
    has any, and with another image's caption (0) unless that reads the same as its own."""
    def draw(rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = rng.choice(rows, size=min(batch, len(rows)), replace=False)
        others = rng.choice(data.n, size=len(pairs))
        hard = [(i, data.negatives[i][int(rng.integers(len(data.negatives[i])))]) for i in pairs
                if data.negatives[i]]
        easy = [(i, o) for i, o in zip(pairs, others, strict=True)
                if data.caption_ids[o] != data.caption_ids[i] and data.images[o] != data.images[i]]
        scored = [(i, i) for i in pairs] + hard + easy
        image_rows, caption_rows = np.array([s[0] for s in scored]), np.array([s[1] for s in scored])
        labels = torch.cat([torch.ones(len(pairs)), torch.zeros(len(hard) + len(easy))])
        return _logits(matcher, data, image_rows, caption_rows), labels
    return draw


def _logits(matcher: CrossAttentionMatcher, data: FolderFeatures, pairs: np.ndarray,
            captions: np.ndarray) -> torch.Tensor:
    """Logits of each pair's image with the caption in the same place of `captions`."""
    length = int(data.text.mask[captions].sum(dim=1).max())
    return matcher(data.patches[data.images[pairs]].float(), data.text.states[captions, :length].float(),
                   data.text.mask[captions, :length])


def negative_accuracy(matcher: CrossAttentionMatcher, data: FolderFeatures, rows: np.ndarray) -> dict[str, float]:
    """Per negative kind and overall: how often an image scores its own caption above that caption's negative
    (chance 0.5, ties count half); kinds with no negative among `rows` are left out."""
    pairs = [(i, row) for i in rows for row in data.negatives[i]]
    if not pairs:
        return {}
    images, negatives = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    with torch.inference_mode():
        own, other = (np.concatenate([_logits(matcher, data, images[start:start + 512], captions[start:start + 512])
                                      .numpy() for start in range(0, len(pairs), 512)])
                      for captions in (images, negatives))
    right = (own > other) + 0.5 * (own == other)
    kinds = np.array([data.kinds[row] for row in negatives])
    report = {kind: round(float(right[kinds == kind].mean()), 4) for kind in KINDS if (kinds == kind).any()}
    return {**report, "all": round(float(right.mean()), 4), "pairs": len(pairs)}
