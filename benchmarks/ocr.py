"""Text inside pictures (--ocr): word recall and one-word keyword queries on rendered signs, and what OCR costs.

The corpus is clipspace.align.signs: signs, labels, receipts and slides, English and Chinese, each word on one
picture. Recall is over the words the builder stored (a Latin word must be read as a word, a Chinese one anywhere
in the text: OCR drops the spaces between Chinese words). A query for one word must find its picture first through
the keyword channel. Builds with and without --ocr are interleaved on the same corpus and model.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import progress
from clipspace.align.signs import read_pictures, write_signs
from clipspace.encoder import DualEncoder
from clipspace.images import load_image
from clipspace.index.publish import open_current
from index_builder.build import build_index
from index_builder.ocr import read_text
from index_builder.options import BuildOptions

SIGNS_SEED = 20260419


@dataclass(frozen=True)
class OcrResult:
    pictures: int
    words: int
    word_recall: float
    recall_by_kind: dict[str, float]
    recall_by_language: dict[str, float]
    queries: int
    rank1: float  # share of one-word keyword queries whose picture comes first
    ocr_s_per_image: float  # median of read_text on the decoded picture, one thread
    build_s: float  # median build without --ocr
    build_ocr_s: float  # median build with --ocr
    slowdown: float
    missed: list[str]  # words not read, "file: word", the first 20


def measure_ocr(encoder: DualEncoder, work_dir: Path, count: int, workers: int, repeats: int = 2) -> OcrResult:
    pictures = read_pictures(write_signs(work_dir / "signs", count, SIGNS_SEED))
    progress(f"OCR: {len(pictures)} rendered pictures, builds with and without --ocr, {repeats} each")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for run in range(repeats):
        for ocr in (False, True):
            index = work_dir / f"ocr-index-{ocr}-{run}"
            started = time.perf_counter()
            build_index(BuildOptions(images=work_dir / "signs", index=index, workers=workers, progress=False,
                                     ocr=ocr), encoder)
            seconds[ocr].append(time.perf_counter() - started)
    version = open_current(work_dir / f"ocr-index-True-{repeats - 1}")
    texts = {record.path: record.ocr_text or "" for record, _, _ in version.items()}
    read = {(picture.file, word): _read_in(word, texts[picture.file]) for picture in pictures
            for word in picture.words}
    first = [version.keyword_search(word, 1) for _, word in read]
    found = [bool(hits) and hits[0][0].path == file for (file, _), hits in zip(read, first, strict=True)]
    timings = [_timed_read(work_dir / "signs" / picture.file) for picture in pictures[:1] + pictures]
    return OcrResult(
        pictures=len(pictures), words=len(read), word_recall=_share(read.values()),
        recall_by_kind=_by(pictures, read, lambda picture: picture.kind),
        recall_by_language=_by(pictures, read, lambda picture: picture.language),
        queries=len(found), rank1=_share(found), ocr_s_per_image=statistics.median(timings[1:]),
        build_s=statistics.median(seconds[False]), build_ocr_s=statistics.median(seconds[True]),
        slowdown=statistics.median(seconds[True]) / statistics.median(seconds[False]),
        missed=[f"{file}: {word}" for (file, word), ok in read.items() if not ok][:20])


def _timed_read(file: Path) -> float:
    image = load_image(file.read_bytes())
    started = time.perf_counter()
    read_text(image)
    return time.perf_counter() - started


def _read_in(word: str, text: str) -> bool:
    if re.search(r"[\u4e00-\u9fff]", word):
        return word in re.sub(r"\s", "", text)
    return word.casefold() in re.findall(r"[^\W_]+", text.casefold())


def _by(pictures: list, read: dict[tuple[str, str], bool], key) -> dict[str, float]:
    groups = {key(picture) for picture in pictures}
    return {group: _share(ok for (file, _), ok in read.items()
                          if key(next(p for p in pictures if p.file == file)) == group) for group in sorted(groups)}


def _share(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
