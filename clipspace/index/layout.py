"""A picture's colour layout: the pixel-level check that confirms a duplicate pair the image vectors propose.

A model that sees neither backgrounds nor sizes well puts two different pictures (the same shapes in the same
places on other backgrounds) at cosine 0.999; their pixels still differ everywhere the background shows. The
signature is the central 80% of the upright image (a crop of up to 10% keeps most of it in place) averaged down to
GRID x GRID cells in CIELAB, where a distance is about what the eye sees. A slight recolour scales the whole
picture's lightness and saturation, so one layout is first scaled (a gain on L, one on a and b, within the range a
recolour moves them) to fit the other best; then the *median* cell distance is taken: a crop or a moment later
(objects jittered) moves the few cells on the objects' edges, which the median ignores, while another background
moves most cells. Two pictures have the same layout when that distance (Delta E) is at most TOLERANCE, measured by
`python -m benchmarks --only duplicates` (docs/decisions.md, "Duplicates").

It is stored with each item (ItemRecord.layout) as base64 text of GRID * GRID * 3 bytes (256 characters).
"""

from __future__ import annotations

import base64

import numpy as np
from PIL import Image

GRID = 8
MARGIN = 0.10  # of each side left out: the part a crop of up to 10% may have cut
TOLERANCE = 2.0  # median Delta E between the cells of two layouts of one picture: benchmarks/duplicates.py
LIGHTNESS_GAIN = (0.9, 1.1)  # how far a recolour may scale L (brightness ±10%), and a and b
CHROMA_GAIN = (0.7, 1.4)

_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.9505, 1.0, 1.089])


def colour_layout(image: Image.Image) -> str:
    """The layout signature of an upright RGB image (as clipspace.images.load_image gives it)."""
    width, height = image.size
    box = (MARGIN * width, MARGIN * height, (1 - MARGIN) * width, (1 - MARGIN) * height)
    cells = image.convert("RGB").resize((GRID, GRID), Image.Resampling.BOX, box=box)
    lab = _lab(np.asarray(cells, dtype=np.float64) / 255)
    encoded = np.clip(np.round(lab * [2.55, 1, 1] + [0, 128, 128]), 0, 255).astype(np.uint8)
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def decode(signature: str) -> np.ndarray:
    """The GRID * GRID Lab cells of a signature, as float32 (L 0-100, a and b about -128-127)."""
    cells = np.frombuffer(base64.b64decode(signature), dtype=np.uint8).reshape(GRID * GRID, 3)
    return (cells.astype(np.float32) - [0, 128, 128]) / [2.55, 1, 1]


def distance(first: np.ndarray, second: np.ndarray) -> float:
    """The median Delta E (CIE76) between the cells of two decoded layouts, either one recoloured to fit the other."""
    return min(_fitted(first, second), _fitted(second, first))


def _fitted(target: np.ndarray, source: np.ndarray) -> float:
    lightness = np.clip(target[:, 0] @ source[:, 0] / max(float(source[:, 0] @ source[:, 0]), 1e-6),
                        *LIGHTNESS_GAIN)
    chroma = np.clip((target[:, 1:] * source[:, 1:]).sum() / max(float((source[:, 1:] ** 2).sum()), 1e-6),
                     *CHROMA_GAIN)
    fitted = np.column_stack([source[:, 0] * lightness, source[:, 1:] * chroma])
    return float(np.median(np.linalg.norm(target - fitted, axis=1)))


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0-1 to CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
