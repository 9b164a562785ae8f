"""What cameras and photo tools write into a file (EXIF time, camera and GPS; XMP keywords), for generated pictures."""

from __future__ import annotations

from xml.sax.saxutils import escape

from PIL import Image


def camera_exif(*, taken: str | None = "2021:07:04 15:30:00", offset: str | None = "+01:00",
                make: str = "Google", model: str = "Pixel 8", gps: dict | None = None) -> Image.Exif:
    """EXIF as a phone writes it: make and model, `DateTimeOriginal` (EXIF's "YYYY:MM:DD HH:MM:SS") with its
    offset, and the GPS IFD (`gps_position`)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset  # OffsetTimeOriginal
    if gps is not None:
        exif.get_ifd(0x8825).update(gps)
    return exif


def gps_position(lat: float, lon: float) -> dict:
    """The GPS IFD of a place: hemisphere letters and (degrees, minutes, seconds) rationals."""
    def dms(value: float) -> tuple[float, float, float]:
        degrees, rest = divmod(abs(value) * 3600, 3600)
        minutes, seconds = divmod(rest, 60)
        return float(degrees), float(minutes), round(seconds, 2)

    return {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}


def xmp_packet(*keywords: str) -> bytes:
    """An XMP packet as Lightroom writes keywords: dc:subject, an rdf:Bag of rdf:li."""
    items = "".join(f"<rdf:li>{escape(keyword)}</rdf:li>" for keyword in keywords)
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>').encode()
