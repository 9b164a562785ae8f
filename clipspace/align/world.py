"""A synthetic bilingual world: scenes of coloured shapes, rendered images and English/Chinese captions."""

from __future__ import annotations

import functools
import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "black")
SIZES = ("small", "large")
# Slots are far enough apart that two large objects never overlap; the order is the canonical caption's.
POSITIONS = ("left", "top", "center", "bottom", "right")
# "all" draws every combination, held-out ones included: for demo corpora, never for measuring generalisation.
# New splits go at the end: a split's position seeds its scenes.
SPLITS = ("train", "val", "test", "compositional", "all")

# Never rendered in train/val/test scenes; the compositional split is made of these alone, so it measures
# whether the model composes a colour and a shape it has only seen apart. At most one per colour and shape.
HELD_OUT_COMBOS = frozenset({
    ("red", "triangle"), ("orange", "hexagon"), ("yellow", "circle"),
    ("green", "cross"), ("blue", "star"), ("purple", "square"),
})

_RGB = {
    "red": (215, 30, 35), "orange": (245, 135, 15), "yellow": (235, 200, 0), "green": (30, 150, 50),
    "blue": (30, 70, 215), "purple": (125, 45, 175), "pink": (240, 105, 180), "black": (25, 25, 25),
}
_SLOT_CENTRES = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8),
                 "center": (0.5, 0.5)}
_RADIUS = {"small": 0.095, "large": 0.15}  # fraction of the image side
_BACKGROUNDS = ("plain", "gradient", "texture")

_EN_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
              "cross": "crosses", "hexagon": "hexagons"}
_EN_SHAPE_SYNONYMS = {"circle": ("circle", "disc", "round shape"), "square": ("square", "box"),
                      "triangle": ("triangle",), "star": ("star", "five-pointed star"),
                      "cross": ("cross", "plus sign"), "hexagon": ("hexagon", "six-sided shape")}
_EN_SIZE_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
_EN_POSITION = {"left": "on the left", "right": "on the right", "top": "at the top",
                "bottom": "at the bottom", "center": "in the center"}
_EN_POSITION_SYNONYMS = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "at the top of the image"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom of the image"),
    "center": ("in the center", "in the centre", "in the middle"),
}
_EN_NUMBERS = ("zero", "one", "two", "three")

_ZH_COLOUR = {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
              "purple": "紫色", "pink": "粉色", "black": "黑色"}
_ZH_SHAPE = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
             "cross": "十字形", "hexagon": "六边形"}
_ZH_SHAPE_SYNONYMS = {"circle": ("圆形", "圆"), "square": ("正方形", "方块"), "triangle": ("三角形", "三角"),
                      "star": ("星形", "五角星", "星星"), "cross": ("十字形", "十字"),
                      "hexagon": ("六边形", "六角形")}
_ZH_SIZE = {"small": "小", "large": "大"}
_ZH_POSITION = {"left": "左边", "right": "右边", "top": "上方", "bottom": "下方", "center": "中间"}
_ZH_POSITION_SYNONYMS = {"left": ("左边", "左侧"), "right": ("右边", "右侧"), "top": ("上方", "上面"),
                         "bottom": ("下方", "下面"), "center": ("中间", "中央")}
_ZH_NUMBERS = ("零", "一", "两", "三")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str

    @property
    def combo(self) -> tuple[str, str]:
        return self.colour, self.shape


@dataclass(frozen=True)
class Background:
    kind: str
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    angle: float  # gradient direction / texture orientation, radians


@dataclass(frozen=True)
class Scene:
    """One world state; everything else (pixels, captions) is a pure function of it plus a seed."""

    objects: tuple[SceneObject, ...]
    background: Background
    noise_seed: int

    @property
    def combos(self) -> frozenset[tuple[str, str]]:
        return frozenset(obj.combo for obj in self.objects)


def allowed_combos(split: str) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs a split may draw: the held-out ones for the compositional split only."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    every = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    if split == "all":
        return tuple(every)
    if split == "compositional":
        return tuple(combo for combo in every if combo in HELD_OUT_COMBOS)
    return tuple(combo for combo in every if combo not in HELD_OUT_COMBOS)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One generator per scene, so scene i is the same whether 10 or 10 000 are made, in any order."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def sample_scene(seed: int, split: str, index: int) -> Scene:
    rng = scene_rng(seed, split, index)
    combos = allowed_combos(split)
    n_objects = int(rng.integers(1, 4))
    positions = [POSITIONS[i] for i in rng.choice(len(POSITIONS), size=n_objects, replace=False)]
    objects = []
    for position in positions:
        # Repeating an earlier object's colour and shape is what gives the world its counts ("two blue stars").
        if objects and rng.random() < 0.3:
            earlier = objects[int(rng.integers(len(objects)))]
            colour, shape = earlier.colour, earlier.shape
        else:
            colour, shape = combos[int(rng.integers(len(combos)))]
        objects.append(SceneObject(shape, colour, SIZES[int(rng.integers(2))], position))
    objects.sort(key=lambda obj: POSITIONS.index(obj.position))
    return Scene(tuple(objects), _sample_background(rng), int(rng.integers(2**31)))


def shape_twin(scene: Scene, split: str, rng: np.random.Generator) -> tuple[Scene, int]:
    """The same scene with one object's shape changed, and that object's index: a hard negative for training.

    Everything else stays, the noise seed included, so both are drawn alike and only the shape tells them
    apart. The new shape keeps the colour and stays inside the split's allowed combinations.
    """
    allowed = set(allowed_combos(split))
    choices = [(index, shape) for index, obj in enumerate(scene.objects) for shape in SHAPES
               if shape != obj.shape and (obj.colour, shape) in allowed]
    index, shape = choices[int(rng.integers(len(choices)))]
    objects = list(scene.objects)
    objects[index] = replace(objects[index], shape=shape)
    return replace(scene, objects=tuple(objects)), index


def training_scenes(n: int, seed: int, split: str, twins: bool = False) -> tuple[list[Scene], list[int | None]]:
    """n scenes of a split and, per scene, the object its captions should name (None: any).

    With `twins`, scenes come in pairs (2k, 2k+1): a scene and its `shape_twin`, both captioned about the
    changed object. Side by side in one batch, colour, place and size cannot tell their captions apart; only
    the shape can, which is what a model must learn to carry shapes to pictures drawn some other way.
    """
    if not twins:
        return list(generate_scenes(n, seed, split)), [None] * n
    scenes: list[Scene] = []
    about: list[int | None] = []
    for index in range(0, n - 1, 2):
        scene = sample_scene(seed, split, index)
        twin, changed = shape_twin(scene, split, scene_rng(seed, split, index + 1))
        scenes += [scene, twin]
        about += [changed, changed]
    if n % 2:
        scenes.append(sample_scene(seed, split, n - 1))
        about.append(None)
    return scenes, about


def _sample_background(rng: np.random.Generator) -> Background:
    """Pale, weakly saturated colours: every object colour (black included) stands out against them."""
    def pale() -> tuple[int, int, int]:
        hue, saturation, value = rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.8, 0.97)
        return _hsv_to_rgb(hue, saturation, value)
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    return Background(kind, (pale(), pale()), float(rng.uniform(0, math.pi)))


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    r, g, b = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return round(r * 255), round(g * 255), round(b * 255)


# ---------------------------------------------------------------------------------------------------- pixels

def render_scene(scene: Scene, size: int = 128) -> Image.Image:
    """Draw the scene at `size` px: background, shapes with a little jitter, then mild pixel noise."""
    rng = np.random.default_rng(scene.noise_seed)
    image = Image.fromarray(_background_pixels(scene.background, size, rng), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        cx, cy = _SLOT_CENTRES[obj.position]
        cx, cy = (cx + rng.uniform(-0.025, 0.025)) * size, (cy + rng.uniform(-0.025, 0.025)) * size
        radius = _RADIUS[obj.size] * size * rng.uniform(0.92, 1.05)
        rotation = rng.uniform(-0.2, 0.2)
        colour = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in _RGB[obj.colour])
        if obj.shape == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        else:
            draw.polygon(_outline(obj.shape, cx, cy, radius, rotation), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + 4 * _noise_window(rng, size)
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")


def _background_pixels(background: Background, size: int, rng: np.random.Generator) -> np.ndarray:
    first, second = (np.array(c, dtype=np.float32) for c in background.colours)
    if background.kind == "plain":
        return np.broadcast_to(first, (size, size, 3)).astype(np.uint8)
    coords = np.linspace(-1, 1, size, dtype=np.float32)
    along = math.cos(background.angle) * coords[None, :] + math.sin(background.angle) * coords[:, None]
    if background.kind == "gradient":
        weight = ((along + 1.42) / 2.84)[..., None]
        return (first * (1 - weight) + second * weight).astype(np.uint8)
    # texture: soft stripes of random period plus speckle, a light pattern the model must learn to ignore
    period = rng.uniform(6, 16) / size * 2
    stripes = 10 * np.sin(along / period * math.pi)[..., None]
    speckle = 6 * _noise_window(rng, size)[..., :1]
    return np.clip(first + stripes + speckle, 0, 255).astype(np.uint8)


@functools.cache
def _noise_tile(size: int) -> np.ndarray:
    return np.random.default_rng(size).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _noise_window(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unit Gaussian noise from a random window of a fixed tile: as varied as fresh noise, 10x cheaper."""
    top, left = rng.integers(size, size=2)
    return _noise_tile(size)[top:top + size, left:left + size]


def _outline(shape: str, cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(k * math.pi / 2 + math.pi / 4, radius * 0.95) for k in range(4)]
    elif shape == "triangle":
        corners = [(k * 2 * math.pi / 3 - math.pi / 2, radius * 1.1) for k in range(3)]
    elif shape == "hexagon":
        corners = [(k * math.pi / 3, radius) for k in range(6)]
    elif shape == "star":
        corners = [(k * math.pi / 5 - math.pi / 2, radius * (1.15 if k % 2 == 0 else 0.47)) for k in range(10)]
    elif shape == "cross":
        arm = radius * 0.36
        square = [(arm, -radius), (arm, -arm), (radius, -arm), (radius, arm), (arm, arm), (arm, radius),
                  (-arm, radius), (-arm, arm), (-radius, arm), (-radius, -arm), (-arm, -arm), (-arm, -radius)]
        corners = [(math.atan2(y, x), math.hypot(x, y)) for x, y in square]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [(cx + r * math.cos(a + rotation), cy + r * math.sin(a + rotation)) for a, r in corners]


# ------------------------------------------------------------------------------------ domain randomisation

# What each colour name covers, as (hue range, saturation range, value range) in HSV, hue in turns (may wrap
# below 0). Jitter is drawn inside these, so "red" means the family of reds, not one RGB triple.
COLOUR_RANGES = {
    "red": ((-0.025, 0.02), (0.72, 1.0), (0.68, 0.95)),
    "orange": ((0.055, 0.095), (0.8, 1.0), (0.85, 1.0)),
    "yellow": ((0.125, 0.17), (0.8, 1.0), (0.85, 1.0)),
    "green": ((0.25, 0.42), (0.6, 1.0), (0.45, 0.8)),
    "blue": ((0.57, 0.665), (0.7, 1.0), (0.6, 0.92)),
    "purple": ((0.74, 0.82), (0.5, 0.85), (0.45, 0.75)),
    "pink": ((0.885, 0.96), (0.35, 0.65), (0.85, 1.0)),
    "black": ((0.0, 1.0), (0.0, 0.3), (0.0, 0.18)),
}
RANDOM_IMAGE_SIZES = (64, 96, 128, 160, 192)
_RANDOM_RADIUS = {"small": (0.07, 0.105), "large": (0.125, 0.158)}
# With a free layout objects may be anywhere in their slot's region, so sizes may spread wider too.
_FREE_RADIUS = {"small": (0.06, 0.115), "large": (0.12, 0.19)}


def sample_colour(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random member of the colour's family (see COLOUR_RANGES)."""
    (h0, h1), (s0, s1), (v0, v1) = COLOUR_RANGES[colour]
    return _hsv_to_rgb(rng.uniform(h0, h1) % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1))


def render_randomised(scene: Scene, free_layout: bool = False) -> Image.Image:
    """Draw the scene with a random look: what it shows stays fixed, how it is drawn does not.

    Varies the drawing style (filled or outlined, anti-aliased by supersampling or not), image size, object
    scale within its size class, rotation, each object's shade within its colour's family, the background
    (plain, gradient, stripes, blotches; lighter or darker), blur, JPEG artefacts and noise. Deterministic
    given the scene. `render_scene` stays the canonical, in-distribution look.

    With `free_layout`, objects sit anywhere in their slot's region (where that slot is the nearest one, so
    "on the left" stays true) at a wider spread of sizes, and so at any distance from each other, rather than
    near five fixed points: pictures made by other means place things freely.
    """
    rng = np.random.default_rng([scene.noise_seed, 0x0D0A])
    size = int(rng.choice(RANDOM_IMAGE_SIZES))
    supersample = 3 if rng.random() < 0.5 else 1
    canvas = size * supersample
    image = Image.fromarray(_random_background(rng, canvas), "RGB")
    draw = ImageDraw.Draw(image)
    outlined_scene = rng.random() < 0.25
    placed: list[tuple[float, float, float]] = []
    for obj in scene.objects:
        if free_layout:
            radius = rng.uniform(*_FREE_RADIUS[obj.size])
            cx, cy = _free_place(obj.position, radius, placed, rng)
        else:  # centre first, then radius: the order of draws that trained clipspace-shapes-v3
            cx, cy = _jittered_slot(obj.position, rng)
            radius = rng.uniform(*_RANDOM_RADIUS[obj.size])
        placed.append((cx, cy, radius))
        cx, cy, radius = cx * canvas, cy * canvas, radius * canvas
        colour = sample_colour(obj.colour, rng)
        outlined = outlined_scene or rng.random() < 0.1
        width = max(supersample, round(radius * rng.uniform(0.15, 0.3))) if outlined else 0
        if obj.shape == "circle":
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            draw.ellipse(box, fill=None if outlined else colour, outline=colour if outlined else None, width=width)
        else:
            corners = _outline(obj.shape, cx, cy, radius, rng.uniform(0, 2 * math.pi))
            if outlined:
                draw.line([*corners, corners[0], corners[1]], fill=colour, width=width, joint="curve")
            else:
                draw.polygon(corners, fill=colour)
    if supersample > 1:
        image = image.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.35:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4) * size / 128))
    pixels = np.asarray(image, dtype=np.float32) + rng.uniform(0, 8) * _noise_window(rng, size)
    image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")
    if rng.random() < 0.35:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(20, 90)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def nearest_slot(x: float, y: float) -> str:
    """The position word for a point (fractions of the side): the slot whose centre is nearest."""
    return min(POSITIONS, key=lambda name: math.dist(_SLOT_CENTRES[name], (x, y)))


def _jittered_slot(position: str, rng: np.random.Generator) -> tuple[float, float]:
    """The slot's centre moved by up to 0.04 of the side each way (x drawn first)."""
    cx, cy = _SLOT_CENTRES[position]
    return cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)


def _free_place(position: str, radius: float, placed: list[tuple[float, float, float]],
                rng: np.random.Generator) -> tuple[float, float]:
    """A centre (fractions of the side) inside the canvas whose nearest slot is `position`, clear of the objects
    already placed; the slot's own centre, a little jittered, when 40 tries find no room (~3% of objects in
    training scenes: they may then touch a neighbour, as things in photographs do)."""
    for _ in range(40):
        x, y = rng.uniform(radius + 0.02, 1 - radius - 0.02, size=2)
        if nearest_slot(x, y) == position and all(math.dist((x, y), (px, py)) > 1.1 * (radius + pr)
                                                   for px, py, pr in placed):
            return float(x), float(y)
    return _jittered_slot(position, rng)


def _random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Plain, gradient, stripes or blotches, in light-to-mid tones with up to moderate saturation."""
    def tone() -> tuple[int, int, int]:
        return _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.6, 0.98))
    first, second = np.array(tone(), np.float32), np.array(tone(), np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        return np.broadcast_to(first, (size, size, 3)).astype(np.uint8)
    coords = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    along = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]
    if kind == 1:
        weight = ((along + 1.42) / 2.84)[..., None]
    elif kind == 2:
        weight = (0.5 + 0.5 * np.sin(along * rng.uniform(3, 14) * math.pi))[..., None]
    else:
        cells = int(rng.integers(3, 9))
        blotches = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8), "L")
        weight = np.asarray(blotches.resize((size, size), Image.Resampling.BICUBIC), np.float32)[..., None] / 255
    return (first * (1 - weight) + second * weight).astype(np.uint8)


# -------------------------------------------------------------------------------------------------- captions

def canonical_caption(scene: Scene) -> str:
    """The one English description of a scene: every object as size, colour, shape, place, in slot order."""
    return _join_en([f"a {o.size} {o.colour} {o.shape} {_EN_POSITION[o.position]}" for o in scene.objects])


def canonical_caption_zh(scene: Scene) -> str:
    return "，".join(f"{_ZH_POSITION[o.position]}有一个{_ZH_SIZE[o.size]}的{_ZH_COLOUR[o.colour]}"
                    f"{_ZH_SHAPE[o.shape]}" for o in scene.objects)


def attribute_query(colour: str, shape: str, language: str) -> str:
    """The short query that attribute precision is measured with ("a red circle", "一个红色的圆形")."""
    return f"a {colour} {shape}" if language == "en" else f"一个{_ZH_COLOUR[colour]}的{_ZH_SHAPE[shape]}"


def sample_caption(scene: Scene, rng: np.random.Generator, about: int | None = None,
                   language: str | None = None, framed: bool = False) -> str:
    """One of the many ways to describe the scene, full or partial, English or Chinese.

    Training on partial captions is what makes short queries ("a red circle") retrieve the scenes that
    contain one; the full ones teach size and place; the canonical form is kept frequent because it is
    what the demo corpus and the full-caption evaluation use. With `about` (an object's index), a partial
    caption names that object rather than any (see `training_scenes`). `language="en"` draws English
    captions only, in the same proportions of full and partial ones (for an English-only text tower).
    With `framed`, a third of the partial captions come inside a framing phrase (`FRAMES`), as full ones
    may: otherwise "an image with …" would only ever introduce *every* object of a scene, and a framed
    short query would prefer scenes with nothing else in them.
    """
    english_only = language == "en"
    draw = rng.random()
    if draw < 0.2:
        return canonical_caption(scene)
    if draw < 0.4 or (english_only and draw < 0.55):
        return _full_caption_en(scene, rng)
    if draw < 0.55:
        return _full_caption_zh(scene, rng)
    english = draw < 0.8 or english_only
    text = _partial_caption_en(scene, rng, about) if english else _partial_caption_zh(scene, rng, about)
    if framed and rng.random() < 1 / 3 and not text[0].isupper():
        text = _pick(rng, FRAMES["en" if english else "zh"]) + text
    return text


# Phrases a partial caption may be framed in (`sample_caption(framed=True)`). The held-out renderer's query
# phrasings ("a picture with a …", "有一个…") are deliberately not among them: they measure phrasings training
# never used (tests/test_align_world.py checks it).
FRAMES = {
    "en": ("a picture of ", "an image with ", "there is ", "a photo of ", "an image of ", "a drawing of ",
           "an image showing ", "this image has ", "a photo with ", "here is "),
    "zh": ("图中有", "画面里有", "这里有", "可以看到", "图片上有", "照片里是"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join_en(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _describe_en(obj: SceneObject, rng: np.random.Generator, with_size: bool, with_position: bool) -> str:
    words = [_pick(rng, _EN_SIZE_SYNONYMS[obj.size])] if with_size else []
    words += [obj.colour, _pick(rng, _EN_SHAPE_SYNONYMS[obj.shape])]
    phrase = "a " + " ".join(words)
    if not with_position:
        return phrase
    place = _pick(rng, _EN_POSITION_SYNONYMS[obj.position])
    return f"{place[0].upper()}{place[1:]}, {phrase}" if rng.random() < 0.15 else f"{phrase} {place}"


def _full_caption_en(scene: Scene, rng: np.random.Generator) -> str:
    objects = list(scene.objects)
    rng.shuffle(objects)
    text = _join_en([_describe_en(o, rng, True, True) for o in objects])
    prefix = _pick(rng, ("", "", "a picture of ", "an image with ", "there is "))
    return prefix + text


def _named(scene: Scene, rng: np.random.Generator, about: int | None) -> SceneObject:
    """Any object of the scene (drawn from rng), or the one `about` names."""
    return scene.objects[int(rng.integers(len(scene.objects)))] if about is None else scene.objects[about]


def _named_combo(scene: Scene, rng: np.random.Generator, about: int | None) -> tuple[str, str]:
    """Any (colour, shape) the scene holds, or the named object's."""
    return _pick(rng, sorted(scene.combos)) if about is None else scene.objects[about].combo


def _named_count(scene: Scene, rng: np.random.Generator, about: int | None) -> tuple[tuple[str, str], int]:
    """A (colour, shape) the scene holds and how many objects have it; the named object's if given."""
    counts = Counter(obj.combo for obj in scene.objects)
    if about is None:
        return _pick(rng, sorted(counts.items()))
    combo = scene.objects[about].combo
    return combo, counts[combo]


def _partial_caption_en(scene: Scene, rng: np.random.Generator, about: int | None = None) -> str:
    draw = rng.random()
    if draw < 0.3:
        colour, shape = _named_combo(scene, rng, about)
        return attribute_query(colour, shape, "en") if rng.random() < 0.5 else f"{colour} {shape}"
    if draw < 0.55 or (about is not None and draw >= 0.85):  # "three shapes" would fit a twin as well
        obj = _named(scene, rng, about)
        return _describe_en(obj, rng, bool(rng.random() < 0.6), bool(rng.random() < 0.6))
    if draw < 0.85:
        (colour, shape), count = _named_count(scene, rng, about)
        noun = _pick(rng, _EN_SHAPE_SYNONYMS[shape]) if count == 1 else _EN_PLURAL[shape]
        number = _pick(rng, (_EN_NUMBERS[count], str(count))) if count > 1 else _pick(rng, ("one", "a"))
        return f"{number} {colour} {noun}"
    count = len(scene.objects)
    return f"{_EN_NUMBERS[count]} {'shape' if count == 1 else 'shapes'}"


def _describe_zh(obj: SceneObject, rng: np.random.Generator, with_size: bool) -> str:
    size = f"{_ZH_SIZE[obj.size]}的" if with_size else ""
    colour = _ZH_COLOUR[obj.colour]
    return f"一个{size}{colour}{'' if with_size else '的'}{_pick(rng, _ZH_SHAPE_SYNONYMS[obj.shape])}"


def _full_caption_zh(scene: Scene, rng: np.random.Generator) -> str:
    objects = list(scene.objects)
    rng.shuffle(objects)
    parts = []
    for obj in objects:
        place = _pick(rng, _ZH_POSITION_SYNONYMS[obj.position])
        thing = _describe_zh(obj, rng, True)
        parts.append(f"{place}有{thing}" if rng.random() < 0.7 else f"{thing}在{place}")
    return "，".join(parts)


def _partial_caption_zh(scene: Scene, rng: np.random.Generator, about: int | None = None) -> str:
    draw = rng.random()
    if draw < 0.35:
        colour, shape = _named_combo(scene, rng, about)
        return attribute_query(colour, shape, "zh") if rng.random() < 0.6 else _ZH_COLOUR[colour] + _ZH_SHAPE[shape]
    if draw < 0.65:
        obj = _named(scene, rng, about)
        thing = _describe_zh(obj, rng, bool(rng.random() < 0.5))
        return f"{_pick(rng, _ZH_POSITION_SYNONYMS[obj.position])}的{thing[2:]}" if rng.random() < 0.4 else thing
    (colour, shape), count = _named_count(scene, rng, about)
    return f"{_ZH_NUMBERS[count]}个{_ZH_COLOUR[colour]}的{_pick(rng, _ZH_SHAPE_SYNONYMS[shape])}"


# ---------------------------------------------------------------------------------------------- on disk

def scene_record(scene: Scene, path: str) -> dict:
    """The manifest line for one scene: a plain (path, caption) pair plus everything needed to score it."""
    return {"path": path, "caption": canonical_caption(scene), "caption_zh": canonical_caption_zh(scene),
            "objects": [asdict(obj) for obj in scene.objects], "background": scene.background.kind}


def generate_scenes(n: int, seed: int, split: str) -> Iterator[Scene]:
    for index in range(n):
        yield sample_scene(seed, split, index)


def write_world(out: Path, n: int, seed: int, split: str = "train", size: int = 128) -> Path:
    """Write NNNNN.png + NNNNN.txt (canonical caption) and captions.jsonl; returns the manifest path."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "captions.jsonl"
    with manifest.open("w", encoding="utf-8") as lines:
        for index, scene in enumerate(generate_scenes(n, seed, split)):
            stem = f"{index:05d}"
            render_scene(scene, size).save(out / f"{stem}.png", compress_level=1)
            (out / f"{stem}.txt").write_text(canonical_caption(scene) + "\n", encoding="utf-8")
            record = {**scene_record(scene, f"{stem}.png"), "split": split, "seed": seed, "index": index}
            lines.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest


def objects_from_record(record: dict) -> tuple[SceneObject, ...]:
    return tuple(SceneObject(**obj) for obj in record["objects"])
