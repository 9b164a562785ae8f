"""Duplicate grouping: pairwise precision and recall of the vectors against a pHash baseline, and its cost.

The corpus is generated from the world renderer (clipspace.align.world) with known answers. A *family* is one
rendered scene, saved as a JPEG, and its near-duplicates, each one transform of it: an exact copy, resized,
recompressed, cropped by up to 10%, rotated through EXIF (pixels turned, the orientation tag turning them back),
slightly recoloured, or the same shot a moment later (the scene drawn again with other jitter and noise). Half the
families have a *look-alike*: the same scene (background, layout, noise) with one object's shape or colour
changed, its own family, never a duplicate. A third have a *confusable*: the same shapes in the same places on
another background, which the embedded model (it sees neither backgrounds nor sizes well) puts at cosine 0.999
to the original; its own family, never a duplicate, so only the pixel check (clipspace.index.layout) tells them
apart. The other images are unrelated scenes.

Pairwise: a pair of items is predicted when they share a group, true when they share a family; precision is the
share of predicted pairs that are true, recall the share of true pairs predicted; `confusable_precision` is the
precision of the predicted pairs with a member in a confusable family or the family it is confused with. The
vectors are grouped alone and gated by the colour layout (`vectors+layout`, what the builder does); pHash is
grouped by the very same rule (its 64 bits as a +-1 vector: inner product = 1 - 2 * hamming / 64), so only the
signal differs.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from clipspace.align.world import COLOURS, SHAPES, Background, Scene, render_scene, sample_scene
from clipspace.encoder import DualEncoder
from clipspace.images import load_image
from clipspace.index.duplicates import THRESHOLD, group_items
from clipspace.index.layout import TOLERANCE, colour_layout

TRANSFORMS = ("copy", "resized", "recompressed", "cropped", "exif_rotated", "recoloured", "moment_later")
RENDER_SIZE = 192
COSINES = (0.95, 0.97, 0.98, 0.983, 0.985, 0.988, 0.99)
PHASH_BITS = (4, 6, 8, 10, 12, 14)  # hamming distances tried for pHash
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Generated:
    paths: list[Path]
    families: np.ndarray  # the family of each path
    transforms: list[str]  # "original", "lookalike_original", "confusable_original", a transform name, or "unrelated"
    lookalike_of: dict[int, int]  # look-alike family -> the family it looks like
    confusable_of: dict[int, int]  # confusable family (another background) -> the family it is confused with
    scenes: list[Scene]  # the scene each family's original draws


def generate(folder: Path, count: int, seed: int = 0) -> Generated:
    """About `count` images in `folder`: families of near-duplicates, look-alikes and unrelated scenes."""
    rng = np.random.default_rng(seed)
    paths, families, transforms, lookalike_of, confusable_of, scenes = [], [], [], {}, {}, []
    family, scene_index, drawn = 0, 0, set()

    def add(image_bytes: bytes, name: str, kind: str, of_family: int) -> None:
        path = folder / f"{len(paths):06d}-{name}.jpg"
        path.write_bytes(image_bytes)
        paths.append(path)
        families.append(of_family)
        transforms.append(kind)

    folder.mkdir(parents=True, exist_ok=True)
    while len(paths) < count:
        scene = sample_scene(seed, "all", scene_index)
        scene_index += 1
        if _content(scene) in drawn:  # the same picture to the embedded model, which sees neither backgrounds nor
            continue  # sizes well (the world's few words make such repeats common): not a look-alike the issue names
        drawn.add(_content(scene))
        if rng.random() < 0.3:  # an unrelated scene, alone
            add(_jpeg(render_scene(scene, RENDER_SIZE)), "unrelated", "unrelated", family)
            scenes.append(scene)
            family += 1
            continue
        _add_family(scene, family, "original", rng, add)
        scenes.append(scene)
        lookalike = _lookalike(scene, rng)
        if rng.random() < 0.5 and _content(lookalike) not in drawn:
            drawn.add(_content(lookalike))
            lookalike_of[family + 1] = family
            _add_family(lookalike, family + 1, "lookalike_original", rng, add, most=1)
            scenes.append(lookalike)
            family += 1
        if rng.random() < 0.3:
            confusable = replace(scene, background=_other_background(scene, seed, rng),
                                 noise_seed=int(rng.integers(2**31)))
            confusable_of[family + 1] = family
            _add_family(confusable, family + 1, "confusable_original", rng, add, most=1)
            scenes.append(confusable)
            family += 1
        family += 1
    return Generated(paths, np.array(families), transforms, lookalike_of, confusable_of, scenes)


def _other_background(scene: Scene, seed: int, rng: np.random.Generator) -> Background:
    """The background of another sampled scene, other than `scene`'s."""
    while True:
        background = sample_scene(seed + 1, "all", int(rng.integers(2**31))).background
        if background != scene.background:
            return background


def _content(scene: Scene) -> tuple[tuple[str, str, str], ...]:
    """What tells scenes apart in the corpus: each object's shape, colour and place (not its size, nor the
    background)."""
    return tuple((obj.shape, obj.colour, obj.position) for obj in scene.objects)


def _add_family(scene: Scene, family: int, kind: str, rng: np.random.Generator, add, most: int = 3) -> None:
    image = render_scene(scene, RENDER_SIZE)
    original = _jpeg(image)
    add(original, kind, kind, family)
    for transform in rng.choice(TRANSFORMS, size=int(rng.integers(1, most + 1)), replace=False):
        add(_transformed(str(transform), scene, image, original, rng), str(transform), str(transform), family)


def _lookalike(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same scene with one object's shape or colour changed."""
    objects = list(scene.objects)
    index = int(rng.integers(len(objects)))
    if rng.random() < 0.5:
        shape = str(rng.choice([s for s in SHAPES if s != objects[index].shape]))
        objects[index] = replace(objects[index], shape=shape)
    else:
        colour = str(rng.choice([c for c in COLOURS if c != objects[index].colour]))
        objects[index] = replace(objects[index], colour=colour)
    return replace(scene, objects=tuple(objects))


def _transformed(transform: str, scene: Scene, image: Image.Image, original: bytes, rng: np.random.Generator
                 ) -> bytes:
    width, height = image.size
    if transform == "copy":
        return original
    if transform == "resized":
        scale = float(rng.choice([0.5, 0.75, 1.5]))
        return _jpeg(image.resize((int(width * scale), int(height * scale)), Image.Resampling.BICUBIC))
    if transform == "recompressed":
        return _jpeg(image, quality=int(rng.integers(25, 50)))
    if transform == "cropped":
        cut = rng.uniform(0.02, 0.10, 4) / 2  # up to 10% of each side's length, shared between its two edges
        return _jpeg(image.crop((int(cut[0] * width), int(cut[1] * height), int(width - cut[2] * width),
                                 int(height - cut[3] * height))))
    if transform == "exif_rotated":
        turn, orientation = [(Image.Transpose.ROTATE_90, 6), (Image.Transpose.ROTATE_180, 3),
                             (Image.Transpose.ROTATE_270, 8)][int(rng.integers(3))]
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation  # a viewer turns the stored pixels back upright
        return _jpeg(image.transpose(turn), exif=exif.tobytes())
    if transform == "recoloured":
        recoloured = ImageEnhance.Color(image).enhance(float(rng.uniform(0.8, 1.2)))
        return _jpeg(ImageEnhance.Brightness(recoloured).enhance(float(rng.uniform(0.9, 1.1))))
    if transform == "moment_later":
        return _jpeg(render_scene(replace(scene, noise_seed=int(rng.integers(2**31))), RENDER_SIZE))
    raise ValueError(transform)


def _jpeg(image: Image.Image, quality: int = 90, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def embed(encoder: DualEncoder, paths: list[Path], batch: int = 256) -> np.ndarray:
    """The image vectors, loaded as the builder loads them (EXIF orientation applied)."""
    return np.concatenate([encoder.embed_images([load_image(path) for path in paths[start:start + batch]])
                           for start in range(0, len(paths), batch)])


def phash_vectors(paths: list[Path]) -> np.ndarray:
    """Each image's 64-bit pHash (of the upright image) as a +-1/8 vector: inner product = 1 - 2 * hamming / 64."""
    import imagehash  # the baseline only: a dev dependency

    bits = np.array([imagehash.phash(load_image(path)).hash.reshape(-1) for path in paths], dtype=np.float32)
    return (2 * bits - 1) / 8


def layouts(paths: list[Path]) -> list[str]:
    """Each image's colour layout, computed as the builder computes it (from the upright decoded picture)."""
    return [colour_layout(load_image(path)) for path in paths]


def pairwise(groups: dict[int, int], families: np.ndarray) -> dict[str, float]:
    """Pairwise precision and recall of predicted groups (member row -> representative row) against families."""
    predicted_pairs = true_predicted = 0
    for members in _members(groups).values():
        predicted_pairs += len(members) * (len(members) - 1) // 2
        _, counts = np.unique(families[members], return_counts=True)
        true_predicted += int((counts * (counts - 1) // 2).sum())
    _, sizes = np.unique(families, return_counts=True)
    true_pairs = int((sizes * (sizes - 1) // 2).sum())
    return {"precision": true_predicted / predicted_pairs if predicted_pairs else 1.0,
            "recall": true_predicted / true_pairs if true_pairs else 1.0,
            "predicted_pairs": predicted_pairs, "true_pairs": true_pairs}


def confusable_precision(groups: dict[int, int], generated: Generated) -> dict[str, float]:
    """Precision of the predicted pairs with a member in a confusable family or the family it is confused with,
    and how many confusable families share a group with theirs."""
    involved = set(generated.confusable_of) | set(generated.confusable_of.values())
    predicted = true = joined = 0
    for members in _members(groups).values():
        families = generated.families[members]
        for first in range(len(members)):
            for second in range(first + 1, len(members)):
                if families[first] in involved or families[second] in involved:
                    predicted += 1
                    true += bool(families[first] == families[second])
        present = set(families.tolist())
        joined += sum(1 for family in present if generated.confusable_of.get(family) in present)
    return {"confusable_precision": true / predicted if predicted else 1.0, "confusables_joined": joined}


def _members(groups: dict[int, int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for member, representative in groups.items():
        found.setdefault(representative, []).append(member)
    return found


def recall_by_transform(groups: dict[int, int], generated: Generated) -> dict[str, float]:
    """For each transform, the share of its copies grouped with their family's original."""
    original = {family: row for row, (family, kind) in enumerate(zip(generated.families, generated.transforms,
                                                                     strict=True))
                if kind.endswith("original")}
    found: dict[str, list[bool]] = {}
    for row, kind in enumerate(generated.transforms):
        if kind in TRANSFORMS:
            first = original[int(generated.families[row])]
            found.setdefault(kind, []).append(row in groups and groups.get(first) == groups[row])
    return {kind: float(np.mean(hits)) for kind, hits in sorted(found.items())}


def lookalikes_joined(groups: dict[int, int], generated: Generated) -> int:
    """Look-alike families put in a group with the family they look like."""
    rep_families: dict[int, set[int]] = {}
    for row, representative in groups.items():
        rep_families.setdefault(representative, set()).add(int(generated.families[row]))
    return sum(1 for families in rep_families.values() for family in families
               if generated.lookalike_of.get(family) in families)


def measure_quality(folder: Path, encoder: DualEncoder, count: int) -> dict:
    """Generate, embed, and group by vectors (at each of COSINES) and by pHash (at each of PHASH_BITS)."""
    started = time.perf_counter()
    generated = generate(folder, count)
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors = embed(encoder, generated.paths)
    embedded_s = time.perf_counter() - started
    started = time.perf_counter()
    signatures = layouts(generated.paths)
    layout_s = time.perf_counter() - started
    hashes = phash_vectors(generated.paths)
    rows = np.arange(len(generated.paths))
    digests = [path.read_bytes() for path in generated.paths]  # the content hash: the bytes themselves here
    table = []
    for method, signal, gate, thresholds in (
            ("vectors", vectors, None, [(t, t) for t in COSINES]),
            ("vectors+layout", vectors, signatures, [(t, t) for t in COSINES]),
            ("phash", hashes, None, [(bits, 1 - 2 * bits / 64) for bits in PHASH_BITS])):
        for shown, threshold in thresholds:
            started = time.perf_counter()
            groups = group_items(rows, digests, signal, threshold=threshold, layouts=gate)
            table.append({"method": method, "threshold": shown, **pairwise(groups, generated.families),
                          **confusable_precision(groups, generated),
                          "lookalikes_joined": lookalikes_joined(groups, generated),
                          "recall_by_transform": recall_by_transform(groups, generated),
                          "group_s": round(time.perf_counter() - started, 3)})
    return {"images": len(generated.paths), "families": int(generated.families.max()) + 1,
            "lookalike_families": len(generated.lookalike_of), "confusable_families": len(generated.confusable_of),
            "default_threshold": THRESHOLD, "layout_tolerance": TOLERANCE, "generate_s": round(generated_s, 1),
            "embed_s": round(embedded_s, 1), "layout_s": round(layout_s, 1), "table": table}


def measure_grouping_time(count: int = 100_000, dim: int = 512, seed: int = 0) -> dict:
    """Seconds to group `count` synthetic vectors: clusters of near-copies (a fifth of the rows) among random ones;
    then again with layouts to confirm each candidate pair (a copy has its source's layout, the rest random ones)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    copies = count // 5
    sources = rng.integers(0, count - copies, copies)
    vectors[count - copies:] = vectors[sources] + 0.1 * rng.standard_normal((copies, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    groups = group_items(np.arange(count), [str(row) for row in range(count)], vectors)
    seconds = time.perf_counter() - started
    grouped_copies = sum(1 for row in range(count - copies, count) if row in groups)
    cells = rng.integers(0, 256, (count, 8 * 8 * 3), dtype=np.uint8)
    cells[count - copies:] = cells[sources]
    signatures = [base64.b64encode(row.tobytes()).decode("ascii") for row in cells]
    started = time.perf_counter()
    gated = group_items(np.arange(count), [str(row) for row in range(count)], vectors, layouts=signatures)
    gated_seconds = time.perf_counter() - started
    return {"vectors": count, "dim": dim, "seconds": round(seconds, 2), "grouped_items": len(groups),
            "copies_grouped": round(grouped_copies / copies, 4), "seconds_with_layouts": round(gated_seconds, 2),
            "grouped_items_with_layouts": len(gated)}
