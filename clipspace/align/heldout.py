"""A second, independent renderer with its own query phrasings: measures generalisation; training never uses it.

`world.py` draws with PIL's ImageDraw at five fixed slots. This module shares nothing with it but the names of
colours and shapes: shapes are signed-distance fields rasterised with numpy and anti-aliased from the
distance itself, objects sit anywhere on the canvas at any size, and the palette, backgrounds (flat, checker,
radial, cloudy), styles (flat fill, fill with a dark rim, thick outline, drop shadow), blur and image sizes are
its own. Its queries are phrased in ways the attribute bars of the world never ask ("the red circle",
"红色的圆形"). A model that only learnt world.py's pixels fails here; one that learnt colours and shapes does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipspace.align import world

# Its own palette: every named colour's typical value, picked independently of world._RGB.
PALETTE = {
    "red": (222, 38, 32), "orange": (250, 120, 28), "yellow": (246, 214, 38), "green": (58, 170, 72),
    "blue": (22, 96, 204), "purple": (140, 58, 172), "pink": (246, 130, 196), "black": (14, 14, 18),
}
STYLES = ("flat", "rim", "outline", "shadow")
BACKGROUNDS = ("flat", "checker", "radial", "cloudy")
IMAGE_SIZES = (72, 96, 128, 160, 224)
# Its own seed space, far from any split of the world: no held-out scene can equal a training scene by seed.
_SEED_SALT = 0x5D7F

# Query phrasings the world's attribute bars never use; the words are the world's, the wording is not.
Phrasing = Callable[[str, str], str]
PHRASINGS: dict[str, tuple[Phrasing, ...]] = {
    "en": (lambda colour, shape: f"the {colour} {shape}",
           lambda colour, shape: f"a picture with {'an' if colour == 'orange' else 'a'} {colour} {shape}"),
    "zh": (lambda colour, shape: f"{world._ZH_COLOUR[colour]}的{world._ZH_SHAPE[shape]}",
           lambda colour, shape: f"有一个{world._ZH_COLOUR[colour]}{world._ZH_SHAPE[shape]}"),
}


@dataclass(frozen=True)
class Drawn:
    """One object as drawn: where (fractions of the side), how big (radius fraction), turned how far."""

    shape: str
    colour: str
    x: float
    y: float
    radius: float
    rotation: float
    rgb: tuple[int, int, int]

    def as_scene_object(self) -> world.SceneObject:
        """The world's vocabulary for it, so the same attribute scoring applies."""
        size = "small" if self.radius < 0.12 else "large"
        return world.SceneObject(self.shape, self.colour, size, world.nearest_slot(self.x, self.y))


@dataclass(frozen=True)
class Picture:
    objects: tuple[Drawn, ...]
    style: str
    background: str
    size: int
    blur: float  # Gaussian sigma in pixels; 0 = sharp
    seed: int


def sample_picture(seed: int, index: int, combos: tuple[tuple[str, str], ...] | None = None) -> Picture:
    """Picture `index` of a seed: 1–3 objects placed freely without overlap, its style and background."""
    rng = np.random.default_rng([_SEED_SALT, seed, index])
    combos = combos or world.allowed_combos("test")
    objects: list[Drawn] = []
    for _ in range(int(rng.integers(1, 4))):
        colour, shape = combos[int(rng.integers(len(combos)))]
        for _attempt in range(60):
            radius = float(rng.uniform(0.07, 0.19))
            x, y = (float(v) for v in rng.uniform(radius + 0.03, 1 - radius - 0.03, size=2))
            if all(math.dist((x, y), (o.x, o.y)) > 1.25 * (radius + o.radius) for o in objects):
                break
        else:
            continue  # no room left: draw fewer objects
        rgb = tuple(int(np.clip(c + rng.integers(-16, 17), 0, 255)) for c in PALETTE[colour])
        objects.append(Drawn(shape, colour, x, y, radius, float(rng.uniform(0, 2 * math.pi)), rgb))
    return Picture(tuple(objects), STYLES[int(rng.integers(len(STYLES)))],
                   BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], int(rng.choice(IMAGE_SIZES)),
                   float(rng.choice([0.0, 0.0, rng.uniform(0.4, 1.3)])), int(rng.integers(2**31)))


_SCENE_RADIUS = {"small": (0.075, 0.105), "large": (0.13, 0.155)}  # either side of Drawn's 0.12 threshold


def picture_of_scene(scene: world.Scene) -> Picture:
    """A world scene drawn by this renderer on a flat background: each object near its slot's centre, at a radius
    of its size class. Everything but the objects' attributes comes from the scene's noise seed and each slot, so a
    twin (same seed, one change) is drawn the same but for that change: what binding is measured on."""
    look = np.random.default_rng([_SEED_SALT, scene.noise_seed])
    objects = []
    for obj in scene.objects:
        rng = np.random.default_rng([_SEED_SALT, scene.noise_seed, world.POSITIONS.index(obj.position)])
        cx, cy = world._SLOT_CENTRES[obj.position]
        x, y = (float(c + rng.uniform(-0.03, 0.03)) for c in (cx, cy))
        radius = float(rng.uniform(*_SCENE_RADIUS[obj.size]))
        rgb = tuple(int(np.clip(c + rng.integers(-16, 17), 0, 255)) for c in PALETTE[obj.colour])
        objects.append(Drawn(obj.shape, obj.colour, x, y, radius, float(rng.uniform(0, 2 * math.pi)), rgb))
    return Picture(tuple(objects), STYLES[int(look.integers(len(STYLES)))], "flat", int(look.choice(IMAGE_SIZES)),
                   0.0, int(look.integers(2**31)))


# ---------------------------------------------------------------------------------------- distance fields

def signed_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Distance to the shape's edge (negative inside) for a shape of circumradius ~r centred at the origin."""
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        return _box(px, py, 0.75 * r, 0.75 * r)
    if shape == "cross":
        return np.minimum(_box(px, py, r, 0.34 * r), _box(px, py, 0.34 * r, r))
    if shape == "triangle":
        return _triangle(px, py, 0.95 * r)
    if shape == "hexagon":
        return _hexagon(px, py, 0.9 * r)
    if shape == "star":
        return _star(px, py, 1.1 * r, 0.45)
    raise ValueError(f"unknown shape {shape!r}")


def _box(px: np.ndarray, py: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    dx, dy = np.abs(px) - half_w, np.abs(py) - half_h
    return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def _triangle(px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Equilateral triangle with circumradius r (Inigo Quilez's exact formula)."""
    k = math.sqrt(3)
    side = r * k / 2  # half the side length
    x, y = np.abs(px) - side, -py + side / k
    fold = x + k * y > 0
    x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * side, 0)
    return -np.hypot(x, y) * np.sign(y)


def _hexagon(px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    kx, ky, kz = -0.866025404, 0.5, 0.577350269
    apothem = r * 0.866025404
    x, y = np.abs(px), np.abs(py)
    dot = np.minimum(kx * x + ky * y, 0)
    x, y = x - 2 * dot * kx, y - 2 * dot * ky
    x, y = x - np.clip(x, -kz * apothem, kz * apothem), y - apothem
    return np.hypot(x, y) * np.sign(y)


def _star(px: np.ndarray, py: np.ndarray, r: float, inner: float) -> np.ndarray:
    """Five-pointed star, outer radius r, inner radius inner * r (after Inigo Quilez's sdStar5)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    x, y = np.abs(px), -py
    d1 = np.maximum(k1x * x + k1y * y, 0)
    x, y = x - 2 * d1 * k1x, y - 2 * d1 * k1y
    d2 = np.maximum(k2x * x + k2y * y, 0)
    x, y = x - 2 * d2 * k2x, y - 2 * d2 * k2y
    x, y = np.abs(x), y - r
    bax, bay = inner * -k1y, inner * k1x - 1  # the edge from the tip towards the inner corner
    h = np.clip((x * bax + y * bay) / (bax * bax + bay * bay), 0, r)
    return np.hypot(x - bax * h, y - bay * h) * np.sign(y * bax - x * bay)


# ------------------------------------------------------------------------------------------------- pixels

def render_picture(picture: Picture) -> Image.Image:
    """Rasterise the picture: background, then each object's coverage from its distance field, then blur/noise."""
    rng = np.random.default_rng(picture.seed)
    n = picture.size
    canvas = _background(picture.background, n, rng)
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    gx, gy = coords[None, :], coords[:, None]
    pixel = 1.0 / n
    for obj in picture.objects:
        cos, sin = math.cos(obj.rotation), math.sin(obj.rotation)
        dx, dy = gx - obj.x, gy - obj.y
        px, py = cos * dx + sin * dy, -sin * dx + cos * dy
        distance = signed_distance(obj.shape, px, py, obj.radius) / pixel  # in pixels
        colour = np.array(obj.rgb, dtype=np.float32)
        if picture.style == "shadow":
            offset = max(1.0, 0.04 * n) * pixel
            shadow = signed_distance(obj.shape, px - offset, py - offset, obj.radius) / pixel
            canvas = _over(canvas, 0.35 * _coverage(shadow - 1.5), np.zeros(3, np.float32))
        if picture.style == "outline":
            width = max(1.5, obj.radius * n * 0.22)
            canvas = _over(canvas, _coverage(np.abs(distance + width / 2) - width / 2), colour)
            continue
        canvas = _over(canvas, _coverage(distance), colour)
        if picture.style == "rim":
            width = max(1.0, obj.radius * n * 0.08)
            canvas = _over(canvas, _coverage(np.abs(distance + width / 2) - width / 2), colour * 0.55)
    if picture.blur:
        canvas = _gaussian_blur(canvas, picture.blur)
    canvas += rng.normal(0, rng.uniform(0, 5), canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8), "RGB")


def _coverage(distance: np.ndarray) -> np.ndarray:
    """Fraction of each pixel inside the edge: a one-pixel linear ramp across it (analytic anti-aliasing)."""
    return np.clip(0.5 - distance, 0, 1)[..., None]


def _over(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return canvas * (1 - alpha) + colour * alpha


def _light(rng: np.random.Generator) -> np.ndarray:
    """A light, weakly coloured tone: every palette colour, black and yellow included, stays visible on it."""
    base = rng.uniform(185, 250)
    return np.clip(base + rng.uniform(-18, 18, size=3), 0, 255).astype(np.float32)


def _background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    first, second = _light(rng), _light(rng)
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    gx, gy = coords[None, :, None], coords[:, None, None]
    if kind == "flat":
        return np.broadcast_to(first, (n, n, 3)).copy()
    if kind == "checker":
        cells = int(rng.integers(3, 9))
        odd = ((np.floor(gx * cells) + np.floor(gy * cells)) % 2).astype(np.float32)
        return first * (1 - odd) + second * odd
    if kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        weight = np.clip(np.hypot(gx - cx, gy - cy) / 0.9, 0, 1)
        return first * (1 - weight) + second * weight
    # cloudy: a few random low-frequency waves, like paper or a soft wall
    field = np.zeros((n, n, 1), np.float32)
    for _ in range(4):
        angle, frequency, phase = rng.uniform(0, math.pi), rng.uniform(1, 4), rng.uniform(0, 2 * math.pi)
        field += np.sin(2 * math.pi * frequency * (math.cos(angle) * gx + math.sin(angle) * gy) + phase)
    weight = (field / 8 + 0.5).clip(0, 1)
    return first * (1 - weight) + second * weight


def _gaussian_blur(canvas: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(canvas, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(w * padded[:, i:i + canvas.shape[1]] for i, w in enumerate(taps))
    return sum(w * rows[i:i + canvas.shape[0]] for i, w in enumerate(taps))


# ------------------------------------------------------------------------------------------------ on disk

def describe(picture: Picture) -> str:
    """An English description in this renderer's own words (the caption recall is scored against)."""
    return "; ".join(f"the {o.colour} {o.shape}" for o in picture.objects)


def generate_pictures(n: int, seed: int) -> Iterator[Picture]:
    for index in range(n):
        yield sample_picture(seed, index)


def write_heldout(out: Path, n: int, seed: int) -> Path:
    """Write NNNNN.png and captions.jsonl (path, caption, objects in the world's vocabulary, how it was drawn)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "captions.jsonl"
    with manifest.open("w", encoding="utf-8") as lines:
        for index, picture in enumerate(generate_pictures(n, seed)):
            path = f"{index:05d}.png"
            render_picture(picture).save(out / path, compress_level=1)
            record = {"path": path, "caption": describe(picture), "renderer": "heldout",
                      "objects": [asdict(o.as_scene_object()) for o in picture.objects],
                      "style": picture.style, "background": picture.background, "size": picture.size,
                      "blur": round(picture.blur, 3), "seed": seed, "index": index}
            lines.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest
