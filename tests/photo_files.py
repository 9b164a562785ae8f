"""Photo files as cameras and photo tools write them (EXIF time, camera and GPS; XMP and IPTC keywords), for tests."""

from __future__ import annotations

import os
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from tests.conftest import make_image

MTIME = 1_700_000_000  # 2023-11-14T22:13:20 UTC
LISBON = {1: "N", 2: (38.0, 42.0, 30.0), 3: "W", 4: (9.0, 8.0, 24.0)}  # 38.708333, -9.14


def camera_exif(*, taken: str | None = "2021:07:04 15:30:00", offset: str | None = "+01:00",
                make: str = "Google", model: str = "Pixel 8", gps: dict | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset  # OffsetTimeOriginal
    if gps is not None:
        exif.get_ifd(0x8825).update(gps)
    return exif


def xmp_packet(*keywords: str) -> bytes:
    """An XMP packet as Lightroom writes keywords: dc:subject, an rdf:Bag of rdf:li."""
    items = "".join(f"<rdf:li>{escape(keyword)}</rdf:li>" for keyword in keywords)
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>').encode()


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
