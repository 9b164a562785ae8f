"""Text inside pictures, for `--ocr`: RapidOCR (PP-OCRv4 detection and recognition, Chinese and English, offline).

It is the optional extra `clipspace[ocr]`, imported only when a build asks for it. One engine per process, shared by
the decode threads (ONNX Runtime's sessions may be run from several threads at once); each run uses one thread,
since the decode threads already keep every core busy.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from PIL import Image

from clipspace.errors import InvalidBuildOptions

MAX_OCR_CHARS = 2000  # a receipt or a slide; a page of a scanned book is cut here (it is a column of every record)
# The long side the detector sees. RapidOCR's own default scales the short side *up* to 736 px and a 4000 px photo
# down only to 2000 px (benchmarks/ocr.py: ~1.1 s a 640x360 sign); text a person can read in a 1280 px view is found.
OCR_SIDE = 1280
_MODULE = "rapidocr_onnxruntime"


def check_ocr_available() -> None:
    """Refuse `--ocr` before anything is read or embedded when the extra is not installed."""
    try:
        __import__(_MODULE)
    except ImportError as error:
        raise InvalidBuildOptions(f"--ocr needs the OCR extra: pip install 'clipspace[ocr]' ({error})") from error


def read_text(image: Image.Image) -> str:
    """The text RapidOCR reads in `image`, line by line in reading order; "" when it finds none."""
    if max(image.size) > OCR_SIDE:
        image = image.copy()
        image.thumbnail((OCR_SIDE, OCR_SIDE), Image.Resampling.BILINEAR)
    lines, _ = _engine()(image)  # a PIL image: RapidOCR turns its RGB into the BGR its models were trained on
    return "\n".join(text for _, text, _ in lines or ())[:MAX_OCR_CHARS]


@cache
def _engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, det_limit_type="max",
                    det_limit_side_len=OCR_SIDE)
