"""Safe image decoding shared by builder and service: check limits from the header, then decode to RGB."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from clipspace.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage

DEFAULT_MAX_PIXELS = 64_000_000  # a 8000x8000 photo; far beyond any camera image we expect to embed
# CLIP's preprocessing scales the short side to the model's input and keeps the central square. Longer than
# this, an image is cropped to its central region of this ratio first: the model sees the same square (with a
# margin for the resampling filter), and an 80:1 panorama or a 20000x1 strip never gets upscaled whole.
MAX_ASPECT_RATIO = 4
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                            ".heic", ".heif", ".avif"})
# Only the formats we index: Pillow would otherwise also parse EPS (through Ghostscript), PSD, FITS...
# JPEG covers MPO (multi-picture) too; HEIF is pillow-heif's (registered below); Pillow reads AVIF itself.
DECODERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
_TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_BACKGROUND = (255, 255, 255)

# A truncated file must be an error, never half an image silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Phones store HEIC. Registered once, here, for every caller of this module (builder, service, thumbnails).
# A phone's HEIC also carries a thumbnail, depth and auxiliary images: we embed the primary picture only.
register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def load_image(source: bytes | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: int | None = None) -> Image.Image:
    """Decode `source` to an upright RGB image or raise a typed `ImageRejected`.

    The pixel limit is checked on the header, before any pixel is decoded, so a decompression bomb costs
    nothing. `draft_size` lets JPEG decode at a reduced DCT scale that still covers draft_size x draft_size
    (about half the decode+resize cost when the model looks at far fewer pixels than the file has).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        raise EmptyImage("empty file: no image data")
    image = _open(data, max_pixels)
    file_size = image.size
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise CorruptImage(f"corrupt or truncated {image.format} image: {error}") from error
    upright = _upright(image)
    rgb = to_rgb(central_region(upright))
    # What a viewer shows: the file's size (not the drafted one), turned as the EXIF orientation turns it.
    rgb.info["original_size"] = file_size if upright.size == image.size else file_size[::-1]
    # The metadata (EXIF, XMP, IPTC) stays in `info` through the conversions; the format name does not.
    rgb.info["format"] = image.format
    return rgb


def central_region(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """The image itself, or for a panorama or strip longer than `max_ratio`:1 its central `max_ratio`:1 part."""
    width, height = image.size
    short = min(width, height)
    keep = max(1, round(short * max_ratio))
    if max(width, height) <= keep:
        return image
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a person would see it (transparency over white, 16-bit scaled)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_to_8bit(image), "L").convert("RGB")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_header(data: bytes) -> Image.Image:
    """The image as Pillow opens it: size, format and metadata (EXIF, XMP, IPTC), not a pixel decoded. For a file
    whose pixels are not needed (its vector is stored) but whose metadata is."""
    return _open(data, max_pixels=sys.maxsize)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except UnidentifiedImageError as error:
        claimed = _claimed_format(data)
        if claimed:
            raise CorruptImage(f"corrupt or truncated {claimed} image header") from error
        raise NotAnImage("not a recognised image format") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise CorruptImage(f"corrupt or truncated image header: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    if width == 0 or height == 0:
        raise CorruptImage(f"image has no pixels ({width}x{height})")
    return image


def _claimed_format(data: bytes) -> str | None:
    """The format whose signature `data` starts with although it did not open: a damaged file, not a foreign one.

    (libavif parses a whole AVIF when opening it, so a truncated AVIF fails in `Image.open`, not in `load`.)
    """
    prefix = data[:16]  # what Image.open shows each format's signature check
    return next((name for name in DECODERS if Image.OPEN[name][1] and Image.OPEN[name][1](prefix)), None)


def _upright(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a damaged EXIF block is not a reason to lose the picture."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow raises assorted types on malformed EXIF
        return image


def _to_8bit(image: Image.Image) -> np.ndarray:
    """Scale 16-bit integer or float greyscale to 0..255 (a plain convert would clip it to white)."""
    pixels = np.asarray(image, dtype=np.float64)
    # Pillow opens 16-bit files as I;16 or I (range 0..65535); float images are 0..1, or 0..255 beyond that.
    top = 65535.0 if image.mode != "F" else (1.0 if pixels.max(initial=0.0) <= 1.0 else 255.0)
    return np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
