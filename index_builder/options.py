"""The builder's options: a frozen dataclass whose defaults and help the CLI reads, checked before any work."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipspace.errors import InvalidBuildOptions
from clipspace.images import DEFAULT_MAX_PIXELS
from index_builder.ocr import OCR_SIDE, check_ocr_available


def _help(text: str) -> dict[str, str]:
    """A field's metadata: the help of its command-line flag."""
    return {"help": text}


@dataclass(frozen=True)
class FileLimits:
    """What reading one file may cost, as `index_builder.files.read_file` checks it."""

    max_file_bytes: int
    max_pixels: int
    draft_size: int | None  # decode JPEGs at the smallest DCT scale that still covers this size


@dataclass(frozen=True)
class BuildOptions:
    images: Path = field(metadata=_help("image folder (recursive)"))
    index: Path = field(metadata=_help("index folder"))
    batch_size: int = field(default=64, metadata=_help("images per forward pass of the model"))
    workers: int = field(default=max(2, os.cpu_count() or 2), metadata=_help("decode threads"))
    index_type: str = field(default="auto", metadata=_help(
        "FAISS factory string (Flat, HNSW32,Flat, ...); auto = Flat below 50k images"))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=_help(
        "skip images with more pixels (width x height, read from the header before decoding)"))
    jpeg_draft: bool = True  # decode a JPEG only as large as the model's input needs
    keep_versions: int = field(default=3, metadata=_help("versions kept on disk, the new one included"))
    max_file_bytes: int = field(default=256 * 1024 * 1024, metadata=_help("skip larger files without reading them"))
    progress: bool = True
    verify: bool = field(default=False, metadata=_help(
        "read and hash every file, even those whose path, size and mtime are unchanged (after restoring a backup "
        "that kept mtimes, or editing tools that preserve them)"))
    patch_tokens: bool = True  # keep the image tower's patch tokens when the model has a re-ranker (matcher)
    ocr: bool = field(default=False, metadata=_help(
        "read the text inside pictures (signs, receipts, slides) into the keyword channel, with RapidOCR: "
        "pip install 'clipspace[ocr]'; text once read is kept while the file is unchanged"))

    def limits(self, image_size: int) -> FileLimits:
        """The limits of reading one file for a model whose input is `image_size` pixels square (or, with OCR, a
        JPEG decoded large enough for the text reader)."""
        draft = max(image_size, OCR_SIDE) if self.ocr else image_size
        return FileLimits(self.max_file_bytes, self.max_pixels, draft if self.jpeg_draft else None)


def check_options(options: BuildOptions) -> None:
    """Refuse what cannot work before any model is loaded or file is read."""
    if not Path(options.images).is_dir():
        raise InvalidBuildOptions(f"image folder not found: {options.images}")
    if min(options.batch_size, options.workers, options.keep_versions, options.max_file_bytes) < 1:
        raise InvalidBuildOptions("batch size, workers, versions kept and file size limit must be positive")
    if options.ocr:
        check_ocr_available()
