"""One image file, from the folder to the model's input: list and stat it, read it once, hash it, decode it.

These are plain functions of plain data, so the local builder runs them on threads and the Ray builder runs the
very same ones in Ray tasks on any node.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK, S_ISREG

import numpy as np
from PIL import Image

from clipspace.errors import ImageRejected
from clipspace.images import IMAGE_SUFFIXES, load_image, open_header
from clipspace.index.layout import colour_layout
from clipspace.photos import PhotoFacts, read_photo_facts
from index_builder.ocr import read_text
from index_builder.options import FileLimits

CAPTION_SUFFIX = ".txt"
MAX_CAPTION_CHARS = 2000


@dataclass(frozen=True)
class Listed:
    """A file as the listing saw it: stat only, nothing read yet; `rejected` says why it will not be indexed."""

    path: str
    size: int = 0
    mtime_ns: int = 0
    has_caption: bool = False
    rejected: str | None = None


@dataclass(frozen=True)
class Work:
    """A file that must be read: `known_sha256` is the content its path had before (when those vectors are valid)."""

    seq: int
    path: str
    known_sha256: str | None
    ocr: bool = False  # read the text in its bytes, unless they are the known ones and `known_text`
    known_text: bool = False  # the known bytes' text was read before (their record's ocr_text is not None)


@dataclass(frozen=True)
class Movable:
    """A previous item whose path is gone: a file with the same bytes elsewhere (moved, renamed) reuses its vector."""

    row: int
    width: int
    height: int
    ocr_text: str | None = None
    layout: str | None = None


@dataclass
class Processed:
    """What reading a file gave: a vector to reuse (`reuse_row`), pixels to embed, or why it was rejected."""

    seq: int
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0
    width: int = 0
    height: int = 0
    pixels: np.ndarray | None = None
    vector: np.ndarray | None = None
    tokens: np.ndarray | None = None  # the image tower's patch tokens (float16), when the version keeps them
    unchanged: bool = False  # the same bytes as before at this path: keep the path's vector
    reuse_row: int | None = None  # the vector of a moved file: its row in the previous version
    rejected: str | None = None
    facts: PhotoFacts | None = None  # capture time, camera, place, keywords: read from every file that is read
    ocr_text: str | None = None  # the text in it (read now, or known of a moved file's bytes); None when unknown
    text_read: bool = False  # OCR read `ocr_text` in this build
    layout: str | None = None  # the colour layout of the decoded picture (or known of a moved file's bytes)


def list_images(root: Path, max_file_bytes: int, not_images: Counter[str] | None = None) -> Iterator[Listed]:
    """Image files under `root`, in a stable order (sorted per folder), with their stat; hidden names skipped.

    Folder symlinks are not followed (no cycles). Nothing is read: the stat decides whether a file can be reused.
    Every other file (a caption sidecar aside) is counted in `not_images` by its extension, so that the report says
    what was left unread (a `.mov`, a RAW format we cannot decode) rather than ignoring it silently.
    Plain string paths, not pathlib: at a hundred million files the listing's per-file cost is the reindex.
    """
    top = os.fspath(root)
    real_root = Path(root).resolve()
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        names = set(files)
        image_stems = {stem for stem, suffix in map(os.path.splitext, files) if suffix.lower() in IMAGE_SUFFIXES}
        prefix = os.path.relpath(folder, top).replace(os.sep, "/") + "/" if folder != top else ""
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if name.startswith("."):
                continue
            if suffix.lower() not in IMAGE_SUFFIXES:
                if not_images is not None and not (suffix == CAPTION_SUFFIX and stem in image_stems):
                    not_images[suffix.lower() or "(no extension)"] += 1
                continue
            yield _listed(os.path.join(folder, name), prefix + name, real_root, max_file_bytes,
                          stem + CAPTION_SUFFIX in names)


def _listed(file: str, path: str, real_root: Path, max_file_bytes: int, has_caption: bool) -> Listed:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return Listed(printable(path), rejected="file name is not valid UTF-8; rename the file")
    try:
        stat = os.lstat(file)
        if S_ISLNK(stat.st_mode):
            if not Path(file).resolve().is_relative_to(real_root):
                return Listed(path, rejected="a link to a file outside the image folder")
            stat = os.stat(file)
    except OSError as error:  # a dangling link, a file deleted while listing
        return Listed(path, rejected=f"cannot read the file: {error.strerror or error}")
    if not S_ISREG(stat.st_mode):  # reading a FIFO named photo.jpg would wait forever
        return Listed(path, rejected="not a regular file (a pipe, socket or device)")
    if stat.st_size > max_file_bytes:
        return Listed(path, rejected=f"file is {stat.st_size:,} bytes; the limit is {max_file_bytes:,}")
    return Listed(path, stat.st_size, stat.st_mtime_ns, has_caption)


def read_file(root: Path, work: Work, movable: dict[str, Movable], limits: FileLimits,
              preprocess: Callable) -> Processed:
    """Read the file once: hash it, and decode it only when no stored vector has these bytes."""
    try:
        return _read_file(Path(root), work, movable, limits, preprocess)
    except Exception as error:  # one strange file must never abort the build
        return Processed(work.seq, rejected=f"unexpected {type(error).__name__}: {error}")


def _read_file(root: Path, work: Work, movable: dict[str, Movable], limits: FileLimits,
               preprocess: Callable) -> Processed:
    file = root / work.path
    try:
        stat = file.stat()
        if stat.st_size > limits.max_file_bytes:
            return Processed(work.seq, rejected=f"file is {stat.st_size:,} bytes; the limit is "
                                                f"{limits.max_file_bytes:,}")
        data = file.read_bytes()
    except OSError as error:  # permission denied, vanished since the listing, an I/O error of the disk
        return Processed(work.seq, rejected=f"cannot read the file: {error.strerror or error}")
    sha256 = hashlib.sha256(data).hexdigest()
    found = Processed(work.seq, sha256, len(data), stat.st_mtime_ns)
    if sha256 == work.known_sha256 or sha256 in movable:  # its vector is stored: only its metadata is read
        found.unchanged = sha256 == work.known_sha256
        if not found.unchanged:
            moved = movable[sha256]
            found.reuse_row, found.width, found.height = moved.row, moved.width, moved.height
            found.ocr_text, found.layout = moved.ocr_text, moved.layout
        text_known = work.known_text if found.unchanged else found.ocr_text is not None
        if work.ocr and not text_known:  # decoded for its text alone; a picture that fails to decode keeps its vector
            with contextlib.suppress(ImageRejected):
                image = load_image(data, max_pixels=limits.max_pixels, draft_size=limits.draft_size)
                found.facts = read_photo_facts(image, mtime_ns=stat.st_mtime_ns)
                found.ocr_text, found.text_read = _text_in(image), True
                found.layout = colour_layout(image)  # an item of a version built before layouts gains one
                return found
        found.facts = read_photo_facts(open_header(data), mtime_ns=stat.st_mtime_ns)
        return found
    try:
        image = load_image(data, max_pixels=limits.max_pixels, draft_size=limits.draft_size)
    except ImageRejected as error:
        return Processed(work.seq, rejected=str(error))
    found.width, found.height = image.info["original_size"]
    found.facts = read_photo_facts(image, mtime_ns=stat.st_mtime_ns)
    found.pixels = np.asarray(preprocess(image))  # torch's tensor (no copy) or ONNX Runtime's array
    found.layout = colour_layout(image)
    if work.ocr:
        found.ocr_text, found.text_read = _text_in(image), True
    return found


def _text_in(image: Image.Image) -> str:
    """The text OCR reads in `image`; "" when it reads none, or fails on this picture (which never costs it)."""
    try:
        return read_text(image)
    except Exception:  # ONNX Runtime and OpenCV raise assorted types on shapes they cannot take
        return ""


def read_caption(image_file: Path) -> str | None:
    """A sidecar `photo.txt` beside `photo.jpg` is the image's caption (stripped, capped, UTF-8)."""
    try:
        text = image_file.with_suffix(CAPTION_SUFFIX).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text[:MAX_CAPTION_CHARS] or None


def printable(path: str) -> str:
    """A name that can be printed and stored, for the report (names may hold undecodable bytes)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
