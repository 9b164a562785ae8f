"""The shared embedding space: one loader for every open_clip model source, and the embed calls."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.factory import load_state_dict
from open_clip.transformer import text_global_pool
from PIL import Image

from clipspace import allocator, packaged_towers
from clipspace.errors import ModelLoadError
from clipspace.identity import NO_WEIGHTS, ModelIdentity, ModelSpec, with_absolute_paths
from clipspace.runtimes import TORCH

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# open_clip's `local-dir:` layout: the config and the weights
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AVX512-BF16 / AMX), where a bf16 model is ~1.8x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_precision(device: str) -> str:
    """bf16 where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32 (see docs/decisions.md)."""
    if device.startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A digest of every weight, so an index can prove which model built it whatever path the model came from."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "blake2b:" + digest.hexdigest()


class DualEncoder:
    """An open_clip model with its preprocessing and tokenizer, answering L2-normalised float32 vectors."""

    runtime = TORCH

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, preprocess: Callable, tokenizer: Callable,
                 fingerprint: str, preprocess_cfg: dict[str, Any]) -> None:
        self.spec = spec
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.preprocess_cfg = preprocess_cfg
        self._dtype = _DTYPES[spec.precision]
        self._encode_text = trimmed_text_encoder(model) or model.encode_text
        self.dim = int(model.text_projection.shape[1] if _is_parameter(model, "text_projection")
                       else self.embed_texts(["probe"]).shape[1])

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return int(size if isinstance(size, int) else max(size))

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with: zero-shot softmax uses it, not a guess."""
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def identity(self) -> ModelIdentity:
        """What an index manifest records about the model, enough to reload it and to prove it is the same."""
        return ModelIdentity(
            model=self.spec.model,
            pretrained=None if self.spec.pretrained in NO_WEIGHTS else self.spec.pretrained,
            seed=None if self.spec.has_weights else self.spec.seed,
            precision=self.spec.precision,
            fingerprint=self.fingerprint,
            dim=self.dim,
            image_size=self.image_size,
            preprocess=self.preprocess_cfg,
        )

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts; anything longer than the model's context is truncated by the tokenizer.

        Texts of similar length share a batch (shortest first), so each batch is trimmed to its own longest
        text where the model allows it exactly (`trimmed_text_encoder`); the answer keeps the input order.
        """
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        vectors = self._embed([texts[index] for index in order], batch_size, lambda batch: self._encode_text(
            self.tokenizer(list(batch)).to(self.spec.device)))
        in_order = np.empty_like(vectors)
        in_order[order] = vectors
        return in_order

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed RGB PIL images with the model's own preprocessing."""
        return self._embed(images, batch_size, lambda batch: self._encode_pixels(
            torch.stack([self.preprocess(image) for image in batch])))

    def embed_pixels(self, pixels: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """Embed a batch already preprocessed by `self.preprocess` (the builder decodes in parallel), stacked or not."""
        if not isinstance(pixels, torch.Tensor):
            pixels = torch.stack(list(pixels))
        with torch.inference_mode():
            return _normalised(self._encode_pixels(pixels))

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.spec.device, self._dtype))

    def _embed(self, items: Sequence, batch_size: int, encode: Callable[[Sequence], torch.Tensor]) -> np.ndarray:
        if len(items) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            return np.concatenate([_normalised(encode(batch)) for batch in _batches(items, batch_size)])


def trimmed_text_encoder(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """open_clip's CLIP text tower run on a batch cut to its longest real sequence; None where that is not exact.

    The tokenizer pads every text to the full context (77 positions), but a query is often 5-10 tokens. With
    a causal mask a position never attends to the padding after it, and the vector is pooled at the
    end-of-text token, so cutting the batch right after its last end-of-text token changes nothing but the
    cost. That holds for models that use CLIP's own `encode_text` with a causal mask and argmax or eos
    pooling; anything else (Hugging Face text towers, CoCa, bidirectional attention, last-token pooling)
    keeps the full path. tests/test_encoder.py proves both paths agree.
    """
    is_clip_text = getattr(type(model), "encode_text", None) is open_clip.CLIP.encode_text
    pool, eos = getattr(model, "text_pool_type", None), getattr(model, "text_eos_id", None)
    if not is_clip_text or getattr(model, "attn_mask", None) is None or pool not in ("argmax", "eos") or (
            pool == "eos" and eos is None):
        return None

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        ends = tokens.argmax(dim=-1) if pool == "argmax" else (tokens == eos).int().argmax(dim=-1)
        return encode_trimmed_text(model, tokens[:, :int(ends.max()) + 1])

    return encode


def encode_trimmed_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's text tower on tokens already cut after the batch's last end-of-text token, of any length up to the
    context: the trimmed path of `trimmed_text_encoder`, and the graph exported to ONNX with that length dynamic."""
    return encode_embedded_text(model, model.token_embedding(tokens), tokens)


def encode_embedded_text(model: torch.nn.Module, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`encode_trimmed_text` after the token embedding's lookup: the ONNX text graph starts here, and the
    torch-free service looks the rows up itself (clipspace.onnx_towers.TokenTable)."""
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = embedded.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    pooled = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


def load_encoder(spec: ModelSpec, threads: int | None = None, pretrained_text: bool = False) -> DualEncoder:
    """Load any open_clip model through its one factory; seeded random weights when none are named.

    `pretrained_text` fills a Hugging Face text tower (`hf_model_name`) with that model's own weights; only
    training asks for it (LiT starts from them), so loading a trained model never fetches a text tower.
    """
    if spec.precision not in _DTYPES:
        raise ModelLoadError(f"{spec.precision} towers run on ONNX Runtime (clipspace.int8_index), not on torch")
    if threads:
        torch.set_num_threads(threads)
    spec = with_absolute_paths(spec)
    pretrained = None if spec.pretrained in NO_WEIGHTS else spec.pretrained
    packaged = _packaged_text_model(spec.model, pretrained)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            if packaged is None:
                name = _register_architecture_file(spec.model)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, device=spec.device, pretrained_text=pretrained_text)
            else:
                name, preprocess_cfg, weights = packaged
                saved = {f"image_{key}": preprocess_cfg[key] for key in ("mean", "std", "interpolation", "resize_mode")
                         if key in preprocess_cfg}
                with _without_partial_init_warning():  # the rest of the weights is loaded right below
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        name, device=spec.device, pretrained_text=pretrained_text or weights is not None, **saved)
                if weights is not None:
                    packaged_towers.load_weights(model, load_state_dict(str(weights)), str(weights))
        tokenizer = open_clip.get_tokenizer(name)
    except ModelLoadError:
        raise
    except Exception as error:  # open_clip raises many types; the caller needs one with the model's name
        raise ModelLoadError(f"cannot load model {spec.model!r} (pretrained={spec.pretrained!r}): {error}") from error
    model.eval()
    fingerprint = weights_fingerprint(model)
    model.to(_DTYPES[spec.precision])
    allocator.return_freed_memory()
    preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    preprocess_cfg.setdefault("size", model.visual.image_size)
    encoder = DualEncoder(spec, model, preprocess, tokenizer, fingerprint, _jsonable(preprocess_cfg))
    weights = (spec.pretrained or "its own weights") if spec.has_weights else f"random weights, seed {spec.seed}"
    log.info("loaded %s (%s, %s, dim %d, %s)", spec.model, weights, spec.precision, encoder.dim, fingerprint)
    return encoder


def _packaged_text_model(model: str, pretrained: str | None) -> tuple[str, dict, Path | None] | None:
    """For a model whose text tower is named by a package (see `packaged_towers`): its config resolved for this
    machine and registered with open_clip, its preprocessing, and its weights file; None for any other model.

    open_clip cannot load these itself (it knows no `package:` names, and a file without the text tower fails
    its strict load), so the model is built from the resolved config and its weights are loaded here.
    """
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        config_file, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    elif model.endswith(".json") and not model.startswith("hf-hub:"):
        config_file, weights = Path(model), Path(pretrained) if pretrained and Path(pretrained).is_file() else None
    else:
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # open_clip's own loader reports it
    model_cfg = config.get("model_cfg", config)
    if not packaged_towers.names_a_package(model_cfg):
        return None
    text = json.dumps(packaged_towers.resolved(model_cfg), sort_keys=True)
    name = "packaged-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    with tempfile.TemporaryDirectory() as folder:  # open_clip registers configs from files only
        (Path(folder) / f"{name}.json").write_text(text, encoding="utf-8")
        open_clip.add_model_config(Path(folder) / f"{name}.json")
    if weights is not None and not weights.is_file():
        raise ModelLoadError(f"model weights not found: {weights}")
    return name, config.get("preprocess_cfg", {}), weights


@contextlib.contextmanager
def _without_partial_init_warning() -> Iterator[None]:
    """Drop open_clip's "Model … initialized partially." (a root-logger warning) while it builds a model."""
    def keep(record: logging.LogRecord) -> bool:
        return "initialized partially" not in record.getMessage()
    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _register_architecture_file(model: str) -> str:
    """Let a JSON architecture file stand for a model name, through open_clip's own config registry."""
    if model.endswith(".json") and not model.startswith(("hf-hub:", "local-dir:")):
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"architecture file not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    return model


def _is_parameter(model: torch.nn.Module, name: str) -> bool:
    return isinstance(getattr(model, name, None), torch.Tensor)


def _normalised(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value
