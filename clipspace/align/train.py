"""The contrastive training loop, top to bottom: data → model → loss → step → eval → checkpoint → export."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipspace import allocator
from clipspace.align import world
from clipspace.align.datasets import (
    CaptionedImage,
    FilePairs,
    PairedShuffle,
    WorldOptions,
    read_pairs,
    world_pool,
)
from clipspace.align.evaluate import evaluate_pairs
from clipspace.align.export import architecture_config, export_local_dir
from clipspace.encoder import ModelSpec, cpu_has_fast_bf16, load_encoder, trimmed_text_encoder
from clipspace.options import to_flat

log = logging.getLogger(__name__)

WORLD = "world"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run depends on; saved in every checkpoint and in the recipe files."""

    model: str  # architecture JSON path, built-in open_clip name, or local-dir:PATH to fine-tune
    pretrained: str | None = None  # tag or checkpoint for a built-in name; None = random init
    data: str = WORLD  # "world", a folder with .txt sidecars, or a .jsonl/.csv manifest
    val_data: str | None = None  # held-out pairs; default: the world's val split, or 5% of the files
    out: str = "runs/align"  # checkpoint folder
    export: str | None = None  # write the final model here in open_clip's local-dir layout
    export_storage: str = "fp32"  # or "fp16" to halve the file
    resume: str | None = None  # a checkpoint.pt to continue from
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    max_logit_scale: float = math.log(100)
    lock_image: bool = False
    lock_text: bool = False
    pretrained_text: bool = False  # start a Hugging Face text tower from its own weights (LiT: with lock_text)
    text_unlocked_layers: int = 0  # with lock_text: its last N layers train, so words can move too (issue 21)
    text_lr_scale: float = 1.0  # the text tower's rate as a share of lr: low keeps a pretrained tower's neighbours
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    world: WorldOptions = field(default_factory=WorldOptions)  # when `data` is "world"; flags `--world-*`
    # a convolutional image tower and its batches in channels-last memory format: its steps run ~1.2x
    # faster on this CPU (docs/decisions.md, issue 7); the same model, up to floating-point rounding
    channels_last: bool = False
    # on a CPU, the image tower's forward and backward under bf16 autocast (weights, optimiser and loss stay
    # fp32): the 96 px ResNet tower's step 411 → 221 ms on this CPU's native bf16 (docs/decisions.md, issue 7).
    # On a GPU the whole step runs under bf16 autocast anyway.
    image_bf16: bool = False


@dataclass(frozen=True)
class TrainResult:
    epoch_losses: list[float]  # mean training loss of each epoch run (not of resumed-over ones)
    metrics: dict[str, object]  # the last epoch's validation report
    seconds: float


def train(opts: TrainOptions) -> TrainResult:
    """Train, evaluating and checkpointing after every epoch."""
    started = time.perf_counter()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    allocator.keep_freed_memory()  # every step frees and allocates the same activations again
    torch.manual_seed(opts.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto" else opts.device
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    # model: the project's one loader, so training starts from exactly what the service would load
    encoder = load_encoder(ModelSpec(opts.model, opts.pretrained, precision="fp32", device=device, seed=opts.seed),
                           pretrained_text=opts.pretrained_text)
    model, tokenizer = encoder.model, encoder.tokenizer
    model.train().requires_grad_(True)
    if opts.lock_image:
        model.lock_image_tower()
    if opts.text_unlocked_layers and not opts.lock_text:
        raise ValueError("text_unlocked_layers unlocks part of a locked text tower: it needs lock_text")
    if opts.lock_text:
        lock_text_tower(model, opts.text_unlocked_layers)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    if opts.channels_last:
        model.visual.to(memory_format=memory_format)

    # data
    train_set, val_set, val_pairs = _datasets(opts, encoder.preprocess, tokenizer)
    order = torch.Generator()
    sampler = PairedShuffle(len(train_set), order) if opts.data == WORLD and opts.world.shape_twins else None
    batches = DataLoader(train_set, batch_size=opts.batch_size, shuffle=sampler is None, sampler=sampler,
                         drop_last=True, num_workers=opts.workers, pin_memory=device == "cuda", generator=order)
    if len(batches) == 0:
        raise ValueError(f"{len(train_set)} training pairs do not fill one batch of {opts.batch_size}")
    total_steps = opts.epochs * len(batches)

    # loss and optimiser
    loss_fn = ClipLoss()
    encode_text = trimmed_text_encoder(model)
    frozen_text = FrozenTextFeatures(model) if opts.lock_text and FrozenTextFeatures.applies(model) else None
    # fused: one kernel over all parameters; on 2 CPU cores ~5x faster than the default per-tensor loop
    optimizer = torch.optim.AdamW(_parameter_groups(model, opts.weight_decay, opts.text_lr_scale), lr=opts.lr,
                                  betas=(0.9, 0.98), eps=1e-6, fused=device.split(":")[0] in ("cpu", "cuda"))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                else contextlib.nullcontext())  # GPU: the whole step in bf16; CPU: the image tower if asked
    image_autocast = _cpu_image_autocast(opts, device)
    step, first_epoch, metrics, epoch_losses = 0, 0, {}, []
    if opts.resume:
        checkpoint = torch.load(opts.resume, map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, first_epoch = checkpoint["step"], checkpoint["epoch"] + 1
        log.info("resumed from %s at epoch %d, step %d", opts.resume, first_epoch, step)

    for epoch in range(first_epoch, opts.epochs):
        train_set.set_epoch(epoch)
        batches.generator.manual_seed(opts.seed * 1_000_003 + epoch)  # same order for a resumed epoch
        model.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{opts.epochs}", dynamic_ncols=True)
        epoch_started, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
        for images, texts in bar:
            # step
            lr = learning_rate(step, total_steps, opts.lr, opts.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            texts = texts.to(device, non_blocking=True)
            with autocast:
                with image_autocast:
                    image_features = model.encode_image(images)
                image_features = F.normalize(image_features.float(), dim=-1)
                text_features = F.normalize(frozen_text(texts) if frozen_text else
                                            text_features_by_length(model, encode_text, texts), dim=-1)
                loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            with torch.no_grad():  # CLIP's temperature clamp: keeps logits from blowing up early in training
                model.logit_scale.clamp_(0, opts.max_logit_scale)
            step += 1
            seen += len(images)
            loss_sum += loss.detach().float()
            if step % 10 == 0:  # reading the loss waits for the GPU; not on every step
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                samples_per_s=f"{seen / (time.perf_counter() - epoch_started):.0f}")
        epoch_losses.append(float(loss_sum) / len(batches))

        # eval
        metrics = evaluate_model(model, tokenizer, val_set, val_pairs, device, autocast)
        log.info("epoch %d: %s", epoch + 1, _summary(metrics))
        tqdm.write(f"epoch {epoch + 1}: mean loss {epoch_losses[-1]:.4f} | {_summary(metrics)}")

        # checkpoint: a plain dict, written aside and renamed so a crash never leaves half a file
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                      "epoch": epoch, "options": to_flat(opts), "metrics": metrics}
        torch.save(checkpoint, out / f"{CHECKPOINT_FILE}.tmp")
        os.replace(out / f"{CHECKPOINT_FILE}.tmp", out / CHECKPOINT_FILE)

    if opts.export:
        name = export_local_dir(model, architecture_config(opts.model), encoder.preprocess_cfg,
                                Path(opts.export), opts.export_storage)
        log.info("exported %s", name)
    return TrainResult(epoch_losses, metrics, time.perf_counter() - started)


def _cpu_image_autocast(opts: TrainOptions, device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the image tower where `image_bf16` asks for it on a CPU; nothing to add elsewhere.

    The text tower stays fp32: it is the smaller part of the step (the 96 px image tower's forward and backward
    are ~411 of ~500 ms). A CPU without native bf16 emulates it, correctly but slowly, which the log says.
    """
    if not opts.image_bf16 or device.split(":")[0] != "cpu":
        return contextlib.nullcontext()
    if not cpu_has_fast_bf16():
        log.warning("image_bf16: this CPU has no native bf16 (AVX512-BF16 / AMX), so the image tower will be "
                    "slower than in fp32, not faster")
    return torch.autocast("cpu", dtype=torch.bfloat16)


def lock_text_tower(model: torch.nn.Module, unlocked_layers: int = 0) -> None:
    """open_clip's text lock with the last `unlocked_layers` layers left training. Its own partial lock has no
    layer names for BERT (MiniLM), so a Hugging Face tower is locked whole and its last layers, LayerNorms included,
    unlocked here, as open_clip does for the towers it knows; CLIP's own text tower uses open_clip's."""
    layers = getattr(getattr(getattr(getattr(model, "text", None), "transformer", None), "encoder", None),
                     "layer", None)
    if not unlocked_layers or layers is None:
        model.lock_text_tower(unlocked_layers=unlocked_layers)
        return
    if not 0 < unlocked_layers <= len(layers):
        raise ValueError(f"text_unlocked_layers={unlocked_layers}: the text tower has {len(layers)} layers")
    model.lock_text_tower()
    for layer in layers[-unlocked_layers:]:
        layer.requires_grad_(True)


class FrozenTextFeatures:
    """A locked text tower's features, computed once per distinct caption and then looked up (LiT).

    With nothing on the text side left to train, a caption's vector never changes, and the world's captions
    repeat (partial ones especially), so a pretrained tower many times the image tower's size costs little
    after the first epochs. The tower runs in eval mode: its dropout must not make one caption two vectors.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.cache = model, {}

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        """True when no parameter that text passes through is trained."""
        return not any(param.requires_grad for param in _text_parameters(model))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = [row.numpy().tobytes() for row in tokens.cpu()]
        missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
        if missing:
            first = {key: index for index, key in reversed(list(enumerate(keys)))}
            tower = getattr(self.model, "text", self.model)
            was_training = tower.training
            tower.eval()
            with torch.no_grad():
                features = self.model.encode_text(tokens[[first[key] for key in missing]])
            tower.train(was_training)
            self.cache.update(zip(missing, features, strict=True))
        return torch.stack([self.cache[key] for key in keys])


def _text_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What encode_text reads: a custom text tower (`model.text`), or CLIP's own text modules."""
    if isinstance(getattr(model, "text", None), torch.nn.Module):
        return list(model.text.parameters())
    names = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")
    return [param for name, param in model.named_parameters() if name.startswith(names)]


def text_features_by_length(model: torch.nn.Module, trimmed: Callable[[torch.Tensor], torch.Tensor] | None,
                            tokens: torch.Tensor) -> torch.Tensor:
    """The text tower on a training batch as two sub-batches, short texts and long ones, each cut to its longest.

    Most captions are short (a median of 18 tokens) but nearly every batch holds one of ~90, so one trimmed
    batch would still run ~90 positions; splitting where it saves most roughly halves the text tower's cost.
    Exact, like the trim itself (`trimmed_text_encoder`), and the full path where the model does not allow it.
    """
    if trimmed is None:
        return model.encode_text(tokens)
    lengths = (tokens != 0).sum(dim=-1)
    order = torch.argsort(lengths)
    ascending = lengths[order].tolist()
    count = len(ascending)
    # cost of a split after i texts: i of them at the i-th length, the rest at the longest
    split = min(range(1, count + 1), key=lambda i: i * ascending[i - 1] + (count - i) * ascending[-1])
    parts = [trimmed(tokens[order[:split]])] + ([trimmed(tokens[order[split:]])] if split < count else [])
    features = torch.cat(parts)
    return features[torch.argsort(order)]


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate_model(model: torch.nn.Module, tokenizer: Callable, val_set: Dataset, val_pairs: list[CaptionedImage],
                   device: str, autocast: contextlib.AbstractContextManager) -> dict[str, object]:
    """The standalone evaluation's metrics, on the model being trained."""
    model.eval()

    def encode(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), autocast:
            return F.normalize(forward(inputs.to(device)).float(), dim=-1).cpu().numpy()

    def embed_texts(texts: list[str]) -> np.ndarray:
        return np.concatenate([encode(model.encode_text, tokenizer(texts[i:i + 512]))
                               for i in range(0, len(texts), 512)])

    loader = DataLoader(val_set, batch_size=256)
    image_vectors = np.concatenate([encode(model.encode_image, images) for images, _ in loader])
    metrics = evaluate_pairs(image_vectors, val_pairs, embed_texts)
    model.train()
    return metrics


def _datasets(opts: TrainOptions, preprocess: Callable,
              tokenizer: Callable) -> tuple[Dataset, Dataset, list[CaptionedImage]]:
    """Training set, validation set and the validation pairs (captions, world objects) to score against."""
    if opts.data == WORLD:
        # validation keeps the canonical look: it tracks the in-distribution bar epoch by epoch
        pools = [world_pool(opts.world, split, preprocess, tokenizer) for split in ("train", "val")]
        val_pairs = [CaptionedImage(Path(f"world-val/{i:05d}"), world.canonical_caption(scene), scene.objects)
                     for i, scene in enumerate(pools[1].scenes)]
        return pools[0], pools[1], val_pairs
    pairs = read_pairs(Path(opts.data))
    if opts.val_data:
        val_pairs = read_pairs(Path(opts.val_data))
    else:
        order = np.random.default_rng(opts.seed).permutation(len(pairs))
        held_out = max(1, len(pairs) // 20)
        val_pairs = [pairs[i] for i in order[:held_out]]
        pairs = [pairs[i] for i in order[held_out:]]
    return FilePairs(pairs, preprocess, tokenizer), FilePairs(val_pairs, preprocess, tokenizer), val_pairs


def _parameter_groups(model: torch.nn.Module, weight_decay: float, text_lr_scale: float = 1.0) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases and the temperature; and, where the text tower's rate
    is scaled, its trained parameters in two groups of their own (`lr_scale`), after the usual two, so a
    checkpoint of a run without them resumes into the same groups."""
    text = {id(param) for param in _text_parameters(model)} if text_lr_scale != 1.0 else set()
    groups = {(scale, decayed): [] for scale in (1.0, text_lr_scale) for decayed in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name
        groups[(text_lr_scale if id(param) in text else 1.0, not exempt)].append(param)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale}
            for (scale, decayed), params in groups.items() if params or scale == 1.0]


def _summary(metrics: dict[str, object]) -> str:
    parts = [f"t2i R@5 {metrics['text_to_image_R@5']:.3f}", f"i2t R@5 {metrics['image_to_text_R@5']:.3f}"]
    for language, report in dict(metrics.get("attribute", {})).items():
        parts.append(f"{language} P@10 {report['mean_P@10']:.3f} (min {report['min_P@10']:.2f})")
    return " | ".join(parts)
