"""Small previews of indexed images, made on first request and cached on disk by content hash.

A thumbnail depends only on the bytes of its image, so the cache is keyed by their sha256: it survives
reindexes (an unchanged file keeps its thumbnail), is shared by every index version, and never serves the
picture of one file for another. See docs/decisions.md ("Thumbnails") for why not at build time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipspace.images import DECODERS, DEFAULT_MAX_PIXELS, load_image

log = logging.getLogger(__name__)

THUMB_SIDE = 256  # longest side in pixels: sharp in a ~140 CSS px grid cell on a 2x screen
THUMB_FORMAT = "WEBP"  # about a third smaller than JPEG at the same look; every current browser shows it
THUMB_QUALITY = 75
THUMB_MEDIA_TYPE = "image/webp"
# Names the recipe above: a change of size, format or quality gets a new cache folder and new ETags.
THUMB_RECIPE = f"{THUMB_SIDE}px-{THUMB_FORMAT.lower()}-q{THUMB_QUALITY}"


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    source_sha256: str  # of the image bytes it was made from

    @property
    def etag(self) -> str:
        return f'"{self.source_sha256[:32]}-{THUMB_RECIPE}"'


def etag_for(source_sha256: str) -> str:
    """The ETag of the thumbnail of an image with this content hash, known before anything is read."""
    return Thumbnail(b"", source_sha256).etag


def make_thumbnail(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Encode an upright RGB preview of the image in `data`, at most THUMB_SIDE pixels on its longest side.

    Decoding goes through the one guarded loader (limits, EXIF orientation, transparency over white); JPEGs
    are drafted at the smallest DCT scale that still covers THUMB_SIDE, which is most of the saving.
    """
    image = load_image(data, max_pixels=max_pixels, draft_size=_short_side_of_thumbnail(data))
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, THUMB_FORMAT, quality=THUMB_QUALITY, method=4)
    return buffer.getvalue()


def _short_side_of_thumbnail(data: bytes) -> int:
    """A JPEG drafted so that both sides cover this still covers THUMB_SIDE on its long side: for a 3:2 photo
    that is the 1/8 DCT scale (375x250 from 3000x2000) where a square THUMB_SIDE draft would need 1/4."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODERS) as header:  # reads the header, decodes nothing
            width, height = header.size
    except Exception:  # whatever is wrong, load_image will refuse it with the right error
        return THUMB_SIDE
    if min(width, height) <= 0:
        return THUMB_SIDE
    return max(1, math.ceil(THUMB_SIDE * min(width, height) / max(width, height)))


class ThumbnailCache:
    """Thumbnails under `folder`/THUMB_RECIPE/ab/abcdef….webp; made from the source file when missing.

    An unwritable folder (a read-only volume) costs speed, not answers: thumbnails are then made on every
    request, and the first failure to store one is logged.
    """

    def __init__(self, folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.folder = Path(folder) / THUMB_RECIPE
        self.max_pixels = max_pixels
        self._warned = False

    def get(self, source: Path, sha256: str) -> Thumbnail:
        """The thumbnail of `source`, whose indexed content hash is `sha256`. Blocking: call it off the loop.

        When the file changed since it was indexed, the thumbnail shows what is on disk now (as /images does)
        and is cached under the new content's hash, where the next reindex will look for it.
        """
        with contextlib.suppress(OSError):  # missing, or a cache folder that cannot be read: make it
            return Thumbnail(self._path(sha256).read_bytes(), sha256)
        data = source.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        thumbnail = Thumbnail(make_thumbnail(data, max_pixels=self.max_pixels), actual)
        self._store(thumbnail)
        return thumbnail

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.{THUMB_FORMAT.lower()}"

    def _store(self, thumbnail: Thumbnail) -> None:
        """Write beside the final name and rename, so a reader never sees half a thumbnail."""
        path = self._path(thumbnail.source_sha256)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(thumbnail.data)
            os.replace(partial, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            if not self._warned:
                log.warning("thumbnails are not cached (made on every request): cannot write %s: %s",
                            self.folder, error)
                self._warned = True
