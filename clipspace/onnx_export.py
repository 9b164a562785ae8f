"""Export a model's two towers to ONNX once per model, proved against torch before anything serves them.

torch 2.14's exporter is `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript): the legacy TorchScript
exporter (`dynamo=False`) bakes the traced sequence length into nn.MultiheadAttention's reshapes, so its text graph
fails at any other length, and the trimmed text path needs the length dynamic. The export is written crash-safely
like an index version: staged, fsynced, reopened and verified (clipspace.onnx_towers.open_export), then renamed
into place; a model whose towers, tokenizer or preprocessing cannot be reproduced is refused with the reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer, default_bpe
from torchvision import transforms

from clipspace import bpe
from clipspace.encoder import DualEncoder, encode_embedded_text, trimmed_text_encoder
from clipspace.errors import ExportRefused, RuntimeUnavailable
from clipspace.index.publish import publish_folder
from clipspace.onnx_towers import (
    FORMAT,
    IMAGE_FILE,
    PROBE_TEXTS,
    RECORD_FILE,
    TEXT_FILE,
    TOKENS_FILE,
    VOCAB_FILE,
    ExportRecord,
    OnnxEncoder,
    export_folder,
    open_export,
    probe_images,
)

log = logging.getLogger(__name__)

_CLEANERS = {f"_clean_{name}": name for name in bpe.CLEANERS}


class _TextTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return encode_embedded_text(self.model, embedded, tokens)


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def export_towers(encoder: DualEncoder, index_dir: Path, threads: int | None = None) -> OnnxEncoder:
    """The model's export beside the index, made now if there is none or the one there is refused (this process has
    the torch towers to make it again); RuntimeUnavailable where it cannot be made, ExportRefused where the exported
    towers differ from torch's."""
    folder = export_folder(index_dir, encoder.fingerprint)
    if folder.is_dir():
        try:
            return open_export(folder, encoder.spec, threads)
        except ExportRefused as error:
            log.warning("making the ONNX export again: %s", error)
            shutil.rmtree(folder)
    if encoder.spec.precision != "fp32":
        raise RuntimeUnavailable(f"the index was built in {encoder.spec.precision}; ONNX Runtime serves towers "
                                 "exported in fp32 (build with --precision fp32 to serve on it)")
    preprocess, text = _preprocess_recipe(encoder.preprocess), _text_facts(encoder)

    def fill(staging: Path) -> None:
        _export_graphs(encoder, staging)
        shutil.copyfile(default_bpe(), staging / VOCAB_FILE)
        record = ExportRecord(
            format=FORMAT, identity=encoder.identity, preprocess=preprocess, logit_scale=encoder.logit_scale,
            text_vectors=encoder.embed_texts(PROBE_TEXTS).tolist(),
            image_vectors=encoder.embed_images(probe_images()).tolist(),
            made_with={"torch": torch.__version__, "open_clip": open_clip.__version__}, **text)
        (staging / RECORD_FILE).write_text(record.model_dump_json(indent=1), encoding="utf-8")
        _check_token_ids(encoder, staging, record)

    publish_folder(folder, fill, lambda staging: open_export(staging, encoder.spec, threads))
    exported = open_export(folder, encoder.spec, threads)
    log.info("exported %s to ONNX at %s (worst probe cosine %.7f)", encoder.spec.model, folder,
             exported.verified_cosine)
    return exported


def _export_graphs(encoder: DualEncoder, folder: Path) -> None:
    model, size = encoder.model, encoder.image_size
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=int(model.context_length))  # start and end tokens at least
    tokens = torch.as_tensor(encoder.tokenizer(list(PROBE_TEXTS[:2])))[:, :8]
    embedded = model.token_embedding(tokens).detach()
    graphs = ((_TextTower(model), (embedded, tokens), TEXT_FILE, ["embedded", "tokens"],
               {"embedded": {0: batch, 1: length}, "tokens": {0: batch, 1: length}}),
              (_ImageTower(model), (torch.zeros(2, 3, size, size),), IMAGE_FILE, ["pixels"], {"pixels": {0: batch}}))
    for tower, example, name, input_names, shapes in graphs:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(tower, example, dynamo=True, input_names=input_names,
                                            output_names=["features"], dynamic_shapes=shapes, verbose=False)
        except Exception as error:  # torch.export raises many types for what it cannot capture
            raise RuntimeUnavailable(f"{encoder.spec.model}'s {input_names[-1]} tower does not export to ONNX: "
                                     f"{type(error).__name__}: {str(error)[:300]}") from error
        program.save(str(folder / name), external_data=True)  # the weights in NAME.data, which ORT maps (onnx_towers)
    # The token embedding stays out of the graph: the service reads the rows a query needs (TokenTable).
    np.save(folder / TOKENS_FILE, model.token_embedding.weight.detach().float().numpy())


def _text_facts(encoder: DualEncoder) -> dict[str, Any]:
    """What the torch-free text path needs; refused for a text tower or tokenizer it does not reproduce."""
    model, tokenizer = encoder.model, encoder.tokenizer
    if trimmed_text_encoder(model) is None:
        raise RuntimeUnavailable(f"{encoder.spec.model}'s text tower is not CLIP's own (a Hugging Face or "
                                 "bidirectional tower): only CLIP text towers are exported")
    if type(tokenizer) is not SimpleTokenizer or tokenizer.reduction_fn is not None or \
            len(tokenizer.all_special_ids) != 2 or tokenizer.clean_fn.__name__ not in _CLEANERS:
        raise RuntimeUnavailable(f"{encoder.spec.model}'s tokenizer ({type(tokenizer).__name__}) is not CLIP's "
                                 "plain BPE tokenizer, which the torch-free service reproduces")
    return {"context_length": int(tokenizer.context_length), "text_pool": model.text_pool_type,
            "eos_id": getattr(model, "text_eos_id", None), "tokenizer_clean": _CLEANERS[tokenizer.clean_fn.__name__]}


def _preprocess_recipe(preprocess: Any) -> dict[str, Any]:
    """open_clip's inference transform read back as `pixels.preprocess`'s recipe; refused for any other."""
    steps = list(getattr(preprocess, "transforms", []))
    kinds = [type(step).__name__ for step in steps]
    if kinds != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"] or \
            (not isinstance(steps[0].size, int) and len(steps[0].size) != 1):
        raise RuntimeUnavailable(f"the model's preprocessing ({' → '.join(kinds)}) is not open_clip's "
                                 "shortest-side resize and centre crop, which the torch-free service reproduces")
    interpolation = {transforms.InterpolationMode.BICUBIC: "bicubic",
                     transforms.InterpolationMode.BILINEAR: "bilinear"}.get(steps[0].interpolation)
    if interpolation is None:
        raise RuntimeUnavailable(f"the model resizes with {steps[0].interpolation}, not bicubic or bilinear")
    size = steps[0].size if isinstance(steps[0].size, int) else steps[0].size[0]
    return {"size": int(size), "interpolation": interpolation,
            "mean": [float(value) for value in steps[4].mean], "std": [float(value) for value in steps[4].std]}


def _check_token_ids(encoder: DualEncoder, folder: Path, record: ExportRecord) -> None:
    mine = bpe.ClipTokenizer(folder / VOCAB_FILE, record.context_length, record.tokenizer_clean)(PROBE_TEXTS)
    if not np.array_equal(mine, np.asarray(encoder.tokenizer(list(PROBE_TEXTS)))):
        raise ExportRefused(f"the torch-free tokenizer's ids differ from {encoder.spec.model}'s own tokenizer")
