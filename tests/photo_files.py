"""Photo files for tests: written with the EXIF and XMP of clipspace.align.photo_metadata, and IPTC keywords."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import make_image

MTIME = 1_700_000_000  # 2023-11-14T22:13:20 UTC
LISBON = {1: "N", 2: (38.0, 42.0, 30.0), 3: "W", 4: (9.0, 8.0, 24.0)}  # 38.708333, -9.14


def iptc_segment(*keywords: str) -> bytes:
    """A JPEG APP13 segment as Photoshop writes IPTC keywords (Pillow writes it through `extra`)."""
    records = b"".join(b"\x1c\x02\x19" + len(k.encode()).to_bytes(2, "big") + k.encode() for k in keywords)
    resource = b"8BIM\x04\x04\x00\x00" + len(records).to_bytes(4, "big") + records + b"\x00" * (len(records) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload


def write(path: Path, fmt: str = "JPEG", **options) -> Path:
    make_image(7, size=(64, 48)).save(path, fmt, **options)
    os.utime(path, (MTIME, MTIME))
    return path
