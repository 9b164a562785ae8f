"""What a photo says about itself (capture time, camera, place, keywords), read from the image already decoded.

`read_photo_facts` reads only what Pillow has already parsed into the image's `info` (EXIF, XMP, the JPEG's
Photoshop/IPTC block), so the builder calls it on the image `load_image` gave it for embedding: no extra bytes
are read and nothing is decoded twice. Metadata is written by thousands of devices and tools, and much of it is
damaged: every field is read on its own and falls back to None (or no tags); reading it never raises, and never
costs the picture.

Capture times are ISO 8601 text whose first 19 characters are always the wall-clock time, `YYYY-MM-DDTHH:MM:SS`:
- EXIF `DateTimeOriginal` with `OffsetTimeOriginal`: that time with its offset, `2021-07-04T15:30:00+01:00`;
- EXIF `DateTimeOriginal` alone: as the camera wrote it, with no offset, `2021-07-04T15:30:00` (the camera's
  clock, whose zone nobody recorded: inventing one would move the picture to another day);
- no usable EXIF time: the file's mtime in UTC, `2024-01-02T03:04:05+00:00`, with source "mtime".
So a filter compares the first 19 characters (they sort as text): "taken in 2019" means the calendar the
photographer saw, which is what a person means.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from PIL import ExifTags, Image

TAKEN_AT_SOURCES = ("exif", "mtime")  # the values of PhotoFacts.taken_at_source
MAX_XMP_BYTES = 1 << 20  # a JPEG's XMP segment holds 64 KiB; HEIF and PNG allow more, and nobody needs 1 MiB of it
MAX_TAGS = 64
MAX_TEXT_CHARS = 100  # a camera name or a keyword; longer is garbage, and it becomes a column of every record

_FORMAT_NAMES = {"MPO": "JPEG"}  # a multi-picture JPEG (stereo cameras, phones' portrait mode) is a JPEG file
_EXIF_TIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_DC_SUBJECT = "{http://purl.org/dc/elements/1.1/}subject"
_RDF_LI = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"
_PHOTOSHOP_IPTC = 0x0404  # the Photoshop image resource that holds the IPTC-IIM records
_IPTC_KEYWORDS = (2, 25)  # IIM record 2 (application), dataset 25 (keywords)

T = TypeVar("T")


@dataclass(frozen=True)
class PhotoFacts:
    """What the index records about a photo besides its pixels: plain values, one column each.

    `taken_at` is None only when neither EXIF nor the mtime gives a time; the others are None (or no tags) when
    unknown or damaged.
    """

    format: str | None  # Pillow's name: JPEG, PNG, WEBP, HEIF, AVIF, GIF, BMP, TIFF
    taken_at: str | None  # ISO 8601, see the module's docstring for which form and why
    taken_at_source: str | None  # one of TAKEN_AT_SOURCES
    camera_make: str | None = None
    camera_model: str | None = None
    lat: float | None = None  # degrees, north positive; with lon, both known or both None
    lon: float | None = None  # degrees, east positive
    tags: tuple[str, ...] = ()  # XMP dc:subject, then IPTC keywords; de-duplicated ignoring case, order kept

    @property
    def camera(self) -> str | None:
        """The camera as a person names it: "Google Pixel 8", but "Canon EOS R5" (not "Canon Canon EOS R5")."""
        make, model = self.camera_make, self.camera_model
        if not make or not model:
            return model or make
        # "NIKON CORPORATION" makes "NIKON D750": the model already names the maker when it starts with its name.
        if model.casefold().startswith(make.split()[0].casefold()):
            return model
        return f"{make} {model}"


def read_photo_facts(image: Image.Image, *, mtime_ns: int) -> PhotoFacts:
    """The facts of `image` (as `load_image` returns it, or as Pillow opened it); `mtime_ns` dates it without EXIF.

    Never raises for metadata: a damaged field is None, and the others are still read.
    """
    exif = _safely(image.getexif, Image.Exif())
    taken_at, taken_at_source = _taken_at(exif, mtime_ns)
    position = _safely(lambda: _position(exif.get_ifd(ExifTags.IFD.GPSInfo)), None)
    return PhotoFacts(
        format=_safely(lambda: _format_name(image), None),
        taken_at=taken_at,
        taken_at_source=taken_at_source,
        camera_make=_safely(lambda: _text(exif.get(ExifTags.Base.Make)), None),
        camera_model=_safely(lambda: _text(exif.get(ExifTags.Base.Model)), None),
        lat=position[0] if position else None,
        lon=position[1] if position else None,
        tags=_unique([*_safely(lambda: _xmp_keywords(image.info.get("xmp")), []),
                      *_safely(lambda: _iptc_keywords(image.info.get("photoshop")), [])]),
    )


def _safely(read: Callable[[], T], fallback: T) -> T:
    """`read()`, or `fallback` when the metadata it reads is damaged."""
    try:
        return read()
    except Exception:  # Pillow, expat and our own parsing raise assorted types on malformed metadata
        return fallback


def _format_name(image: Image.Image) -> str | None:
    name = image.format or image.info.get("format")  # load_image's RGB copy keeps the name in info
    return _FORMAT_NAMES.get(name, name) if isinstance(name, str) else None


def _text(value: Any) -> str | None:
    """An EXIF or IPTC string as a person reads it: no NULs, padding or control characters; None when empty."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = "".join(char for char in value if char.isprintable()).strip()
    return text[:MAX_TEXT_CHARS] or None


def _taken_at(exif: Image.Exif, mtime_ns: int) -> tuple[str | None, str | None]:
    """The capture time and where it came from: EXIF's, else the file's mtime."""
    exif_time = _safely(lambda: _exif_time(exif.get_ifd(ExifTags.IFD.Exif)), None)
    if exif_time:
        return exif_time, "exif"
    mtime = _safely(lambda: datetime.fromtimestamp(mtime_ns // 1_000_000_000, UTC).isoformat(), None)
    return (mtime, "mtime") if mtime else (None, None)


def _exif_time(exif_ifd: dict) -> str | None:
    written = _text(exif_ifd.get(ExifTags.Base.DateTimeOriginal))
    match = _EXIF_TIME.fullmatch(written or "")
    if not match:
        return None  # absent, blank ("    :  :     :  :  ") or another format: the mtime stands in
    taken = datetime(*(int(part) for part in match.groups()))  # "0000:00:00 00:00:00" raises: no time
    offset = _offset(exif_ifd.get(ExifTags.Base.OffsetTimeOriginal))  # a bad offset leaves the time as written
    return (taken.replace(tzinfo=offset) if offset else taken).isoformat()


def _offset(value: Any) -> timezone | None:
    match = _EXIF_OFFSET.fullmatch(_text(value) or "")
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) >= 60:  # UTC-12:00 to UTC+14:00 are the zones on Earth
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def _position(gps: dict) -> tuple[float, float] | None:
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "N", "S", 90)
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "E", "W", 180)
    # Exactly 0,0 is what receivers without a fix write; a photo truly taken there is at sea, off Africa.
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None  # half a position cannot be searched near anything
    return lat, lon


def _degrees(dms: Any, ref: Any, positive: str, negative: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (rationals; a zero denominator reads as NaN) and a hemisphere, as signed degrees."""
    hemisphere = (_text(ref) or "").upper()
    if hemisphere not in (positive, negative) or not isinstance(dms, tuple) or len(dms) != 3:
        return None
    degrees, minutes, seconds = (float(part) for part in dms)
    if not all(math.isfinite(part) and part >= 0 for part in (degrees, minutes, seconds)):
        return None
    if minutes >= 60 or seconds >= 60:
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if value > limit:
        return None
    return round(-value if hemisphere == negative else value, 7)  # 7 decimals: about a centimetre


def _xmp_keywords(packet: bytes | str | None) -> list[str]:
    """The items of XMP's dc:subject (what Lightroom, digiKam and darktable write as keywords)."""
    if isinstance(packet, str):  # PNG's iTXt gives text; JPEG, WebP, HEIF and AVIF give bytes
        packet = packet.encode("utf-8")
    if not packet or len(packet) > MAX_XMP_BYTES:
        return []
    text = packet.decode("utf-16" if packet[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8")
    if "<!DOCTYPE" in text:  # XMP never has one; refusing it leaves no entity to expand or to fetch
        return []
    root = ET.fromstring(text.strip("\x00 \t\r\n"))  # some writers pad the packet with NULs
    return [item.text for subject in root.iter(_DC_SUBJECT) for item in subject.iter(_RDF_LI) if item.text]


def _iptc_keywords(photoshop: Any) -> list[str]:
    """IPTC-IIM keywords (dataset 2:25) from a JPEG's Photoshop block, which Pillow parses into `info`.

    Parsed here rather than with `PIL.IptcImagePlugin.getiptcinfo`: that reads only a JpegImageFile, not the
    RGB image `load_image` returns.
    """
    data = photoshop.get(_PHOTOSHOP_IPTC) if isinstance(photoshop, dict) else None
    if not isinstance(data, bytes):
        return []
    keywords, offset = [], 0
    while offset + 5 <= len(data) and data[offset] == 0x1C:  # each record: 0x1C, record, dataset, length
        record, dataset = data[offset + 1], data[offset + 2]
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        if length & 0x8000 or offset + 5 + length > len(data):  # an extended length (binary data only), or cut
            break
        value = data[offset + 5:offset + 5 + length]
        offset += 5 + length
        if (record, dataset) == _IPTC_KEYWORDS:
            keywords.append(_iptc_text(value))
    return keywords


def _iptc_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:  # older tools wrote Latin-1 without saying so
        return value.decode("latin-1")


def _unique(keywords: Iterable[Any]) -> tuple[str, ...]:
    seen: set[str] = set()
    tags = []
    for keyword in keywords:
        tag = _text(keyword)
        if tag and tag.casefold() not in seen and len(tags) < MAX_TAGS:
            seen.add(tag.casefold())
            tags.append(tag)
    return tuple(tags)
