"""A model's two towers on ONNX Runtime, without torch: its export opened, proved against torch's vectors, and run.

An export lives in INDEX_DIR/runtimes/onnx-<weights digest>/ (made once per model by clipspace.onnx_export): the
two graphs, each with its weights in a file beside it (`text.onnx.data`), the text tower's token embedding
(`token_embedding.npy`, read a row at a time: TokenTable), the tokenizer's vocabulary, and
`runtime.json` with the model's identity, its preprocessing and the vectors torch gave for a fixed set of probe texts
and images. Opening an export embeds probes again and refuses it (ExportRefused) unless every vector has a cosine of
at least MIN_COSINE with torch's: a damaged or altered file never serves, and the check also covers the torch-free
tokenizer and preprocessing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from clipspace import allocator, bpe, pixels
from clipspace.errors import ExportRefused, RuntimeUnavailable
from clipspace.identity import ModelIdentity, ModelSpec
from clipspace.runtimes import ONNX

log = logging.getLogger(__name__)

RUNTIMES_DIR = "runtimes"
RECORD_FILE = "runtime.json"
TEXT_FILE, IMAGE_FILE, VOCAB_FILE = "text.onnx", "image.onnx", "bpe_vocab.txt.gz"
TOKENS_FILE = "token_embedding.npy"
FORMAT = 2  # 2: the token embedding out of the text graph (TOKENS_FILE); an export of format 1 is made again
# fp32 graphs of the same weights differ from torch only by the order of float additions (max |Δ| ~1e-5 on the
# features measured on the embedded model and ViT-B-32, a cosine 1 - 1e-10); altering one weight by a percent moves
# it far below this bound (tests/test_onnx_runtime.py).
MIN_COSINE = 0.9999
PROBE_TEXTS = ("a photo", "a red circle above two blue squares", "Café, 東京 & a dog's ball — 3 cats!",
               "a long caption " + "with many words " * 12)
# What a start embeds again, of the probes: the short texts and one picture. Any weight altered or damaged on disk
# moves every vector its tower answers, so one probe per tower finds it (tests/test_onnx_runtime.py); the long text
# and the other picture shapes prove the code, not the files, and are embedded when an export or copy is made.
# ViT-B-32 on a loaded 2-core machine: the full set took 1.16 s (fp32) and 0.58 s (int8) of a start.
START_TEXTS, START_PICTURES = 3, 1


class ExportRecord(BaseModel):
    """runtime.json: what the towers need beside their graphs, and torch's answers to the probes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    identity: ModelIdentity
    context_length: int
    text_pool: str  # "argmax" (CLIP's end-of-text has the highest id) or "eos"
    eos_id: int | None
    tokenizer_clean: str
    preprocess: dict[str, Any]  # pixels.preprocess's recipe
    logit_scale: float
    text_vectors: list[list[float]]
    image_vectors: list[list[float]]
    made_with: dict[str, str]


def runtime_folder(index_dir: Path, kind: str, fingerprint: str) -> Path:
    """INDEX/runtimes/<kind>-<weights digest>/: one per model and runtime, shared by every index version."""
    return Path(index_dir) / RUNTIMES_DIR / f"{kind}-{fingerprint.split(':')[-1]}"


def export_folder(index_dir: Path, fingerprint: str) -> Path:
    """Where the export of the model with these weights lives."""
    return runtime_folder(index_dir, ONNX, fingerprint)


def probe_images() -> list[Image.Image]:
    """Fixed pictures of three shapes (tall, wide, square), so resizing and cropping are proved too."""
    rng = np.random.default_rng(20)
    images = []
    for width, height in ((150, 100), (70, 210), (96, 96)):
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        noise = rng.integers(0, 96, (height, width, 3)).astype(np.float32)
        images.append(Image.fromarray(np.clip(ramp * np.array([1.0, 0.5, 0.2]) + noise, 0, 255).astype(np.uint8)))
    return images


class TokenTable:
    """The text tower's token embedding, read from its .npy file a row per token with pread, never mapped.

    Inside the graph, ONNX Runtime mapped the table (101 MB for ViT-B-32) and the kernel's fault-around made 64 KB
    of it resident for every 2 KB row a query read: 40-45 MB of the int8 service's RSS after a hundred queries, the
    difference between 337 and 293 MB (docs/decisions.md, "Serving on ONNX Runtime"). Read rows sit in the page
    cache, which the system may reclaim, not in the process.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(file)
            self._offset = file.tell()
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ExportRefused(f"{path} is not a float32 table of token rows (shape {shape}, {dtype})")
        self.rows, self.width = shape
        self._row_bytes = self.width * 4
        if path.stat().st_size != self._offset + self.rows * self._row_bytes:
            raise ExportRefused(f"{path} is cut or padded: {path.stat().st_size} bytes for {self.rows} rows")
        self._fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """The rows of `ids` (any shape) as float32, shaped ids.shape + (width,)."""
        wanted, where = np.unique(ids, return_inverse=True)
        rows = np.frombuffer(b"".join(os.pread(self._fd, self._row_bytes, self._offset + int(row) * self._row_bytes)
                                      for row in wanted), dtype=np.float32).reshape(len(wanted), self.width)
        return rows[where.reshape(ids.shape)]


class OnnxEncoder:
    """The dual encoder on ONNX Runtime: the same vectors as `DualEncoder` for a model exported in fp32."""

    runtime = ONNX

    def __init__(self, spec: ModelSpec, folder: Path, record: ExportRecord, threads: int | None = None) -> None:
        import onnxruntime  # the `onnx` extra; the caller turns its absence into RuntimeUnavailable

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1  # one model thread serves; its ops use the cores (intra-op)
        # Without ORT's arena, ViT-B-32's RSS after 32-image batches is 643 MB instead of 1,006 MB (malloc_trim after
        # loading in both; docs/decisions.md, "Serving on ONNX Runtime").
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        # The weights live in files beside the graphs (text.onnx.data), which ONNX Runtime maps instead of copying
        # them out of a parsed protobuf: the sessions open in less time, and the pages its prepacked kernels copied
        # are given back. ViT-B-32 service RSS after queries and uploads: fp32 779 -> 675 MB, int8 432 -> 320 MB
        # (docs/lab-notes.md); the token embedding, no longer in the graph, is read by TokenTable.
        self._text = onnxruntime.InferenceSession(str(folder / TEXT_FILE), options, providers=["CPUExecutionProvider"])
        self._image = onnxruntime.InferenceSession(str(folder / IMAGE_FILE), options,
                                                   providers=["CPUExecutionProvider"])
        self._tokenizer = bpe.ClipTokenizer(folder / VOCAB_FILE, record.context_length, record.tokenizer_clean)
        self._token_rows = TokenTable(folder / TOKENS_FILE)
        allocator.return_freed_memory()  # the graphs' parsed protobufs and the vocabulary's decoded text
        self.spec, self.folder, self.record = spec, folder, record
        self.fingerprint, self.dim = record.identity.fingerprint, record.identity.dim
        self.verified_cosine: float | None = None  # the worst probe cosine, set by open_export (and open_int8)
        self.probe_mean_cosine: float | None = None  # set by open_int8, whose bound has a mean too

    @property
    def image_size(self) -> int:
        return self.record.identity.image_size

    @property
    def identity(self) -> ModelIdentity:
        return self.record.identity

    @property
    def logit_scale(self) -> float:
        return self.record.logit_scale

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return pixels.preprocess(image, self.record.preprocess)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Texts of similar length share a batch, cut after its last end-of-text token (the trimmed text path:
        the graph takes any length up to the context); the answer keeps the input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        ids = self._tokenizer([texts[index] for index in order])
        ends = ids.argmax(axis=1) if self.record.text_pool == "argmax" else (ids == self.record.eos_id).argmax(axis=1)
        batches = [slice(start, start + batch_size) for start in range(0, len(ids), batch_size)]
        vectors = np.concatenate([self._run_text(ids[rows, :ends[rows].max() + 1]) for rows in batches])
        in_order = np.empty_like(vectors)
        in_order[order] = vectors
        return _normalised(in_order)

    def _run_text(self, tokens: np.ndarray) -> np.ndarray:
        return self._text.run(None, {"embedded": self._token_rows(tokens), "tokens": tokens})[0]

    def embed_pixels(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return _normalised(self._image.run(None, {"pixels": np.stack(list(batch))})[0])

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_pixels([self.preprocess(image) for image in images])

    def probe_cosines(self, every_probe: bool = True) -> np.ndarray:
        """The cosines between this runtime's probe vectors and torch's, recorded when the export was made: of every
        probe, or of the START_TEXTS and START_PICTURES a start embeds."""
        texts, pictures = (len(PROBE_TEXTS), None) if every_probe else (START_TEXTS, START_PICTURES)
        cosines = [np.sum(self.embed_texts(PROBE_TEXTS[:texts]) * np.asarray(self.record.text_vectors[:texts]), axis=1),
                   np.sum(self.embed_images(probe_images()[:pictures])
                          * np.asarray(self.record.image_vectors[:pictures]), axis=1)]
        return np.concatenate(cosines)


def read_record(folder: Path) -> ExportRecord:
    try:
        return ExportRecord.model_validate_json((folder / RECORD_FILE).read_bytes())
    except FileNotFoundError as error:
        raise RuntimeUnavailable(f"no ONNX export at {folder}") from error
    except (OSError, ValidationError) as error:
        raise ExportRefused(f"the ONNX export at {folder} cannot be read: {error}") from error


def open_export(folder: Path, spec: ModelSpec, threads: int | None = None, every_probe: bool = True) -> OnnxEncoder:
    """The export at `folder`, after proving it answers torch's probe vectors (else ExportRefused): every probe, or
    those a start embeds again (START_TEXTS)."""
    record = read_record(folder)
    if record.format != FORMAT:
        raise ExportRefused(f"the ONNX export at {folder} has format {record.format}, this version reads {FORMAT}")
    try:
        encoder = OnnxEncoder(spec, folder, record, threads)
        worst = float(encoder.probe_cosines(every_probe).min())
    except ImportError as error:
        raise RuntimeUnavailable(f"ONNX Runtime is not installed: pip install 'clipspace[onnx]' ({error})") from error
    except Exception as error:  # onnxruntime raises its own types for a damaged graph
        raise ExportRefused(f"the ONNX export at {folder} does not run: {type(error).__name__}: {error}") from error
    if not worst >= MIN_COSINE:
        raise ExportRefused(f"the ONNX export at {folder} differs from the torch towers: a probe's cosine is "
                            f"{worst:.6f}, below {MIN_COSINE}")
    log.info("ONNX export %s verified (worst probe cosine %.7f)", folder, worst)
    encoder.verified_cosine = worst
    return encoder


def _normalised(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32, copy=False)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
