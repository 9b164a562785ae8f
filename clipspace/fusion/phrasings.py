"""Caption families: the ways a person describes a scene, each a fixed function of it, in English and Chinese.

The world's canonical caption says every object's size, colour, shape and place, in slot order. People leave
sizes and places out, name objects in another order, join them with a comma, "next to" or "with", count
them ("two red circles") and frame them ("a photo of …"). A matcher trained on one grammar learns that
grammar (issue 21: "large" lifted binding from 0.47 to 0.78); trained across these families it has to bind
colour to shape in all of them.

A family only ever says what is true of the scene, and each object keeps its colour and shape together, so
the words still bind. A twin is a hard negative in a family only if the family can tell it from the scene
(`is_negative`): a position swap is invisible to a caption without places (there it is a paraphrase, not a
negative), a size swap to one without sizes. Swap twins must also keep the caption's bag of words, so that
only binding tells them apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipspace.align import world
from clipspace.fusion.twins import MAKERS

SWAP_KINDS = ("colour_swap", "position_swap", "size_swap")


@dataclass(frozen=True)
class Family:
    sizes: bool  # does the caption say each object's size?
    positions: bool  # ... and its place?
    en: Callable[[world.Scene], str]
    zh: Callable[[world.Scene], str]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The twin kinds this family can express: the others would be paraphrases of the scene."""
        return tuple(kind for kind, said in (("colour_swap", True), ("position_swap", self.positions),
                                             ("size_swap", self.sizes), ("count_change", True)) if said)


# ------------------------------------------------------------------------------------------------- English

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _thing_en(obj: world.SceneObject, size: bool = False, place: bool = False) -> str:
    words = ([obj.size] if size else []) + [obj.colour, obj.shape]
    text = f"{_article(words[0])} {' '.join(words)}"
    return f"{text} {world._EN_POSITION[obj.position]}" if place else text


def _things_en(scene: world.Scene, size: bool = False, place: bool = False) -> list[str]:
    return [_thing_en(obj, size, place) for obj in scene.objects]


def _then(joiner: str, parts: list[str]) -> str:
    """'X next to Y', and for three 'X next to Y and Z'."""
    return parts[0] if len(parts) == 1 else f"{parts[0]} {joiner} {world._join_en(parts[1:])}"


def _counted_en(scene: world.Scene) -> str:
    counts = Counter(obj.combo for obj in scene.objects)  # first-seen order: slot order
    return world._join_en([f"{world._EN_NUMBERS[n]} {colour} {shape if n == 1 else world._EN_PLURAL[shape]}"
                           for (colour, shape), n in counts.items()])


# ------------------------------------------------------------------------------------------------- Chinese

def _thing_zh(obj: world.SceneObject, size: bool = False) -> str:
    colour, shape = world._ZH_COLOUR[obj.colour], world._ZH_SHAPE[obj.shape]
    return f"一个{world._ZH_SIZE[obj.size]}的{colour}{shape}" if size else f"一个{colour}的{shape}"


def _things_zh(scene: world.Scene, size: bool = False) -> list[str]:
    return [_thing_zh(obj, size) for obj in scene.objects]


def _join_zh(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "、".join(parts[:-1]) + "和" + parts[-1]


def _then_zh(joiner: str, parts: list[str]) -> str:
    """'X旁边有Y', and for three 'X旁边有Y和Z'."""
    return parts[0] if len(parts) == 1 else parts[0] + joiner + _join_zh(parts[1:])


def _placed_zh(scene: world.Scene) -> str:
    return "，".join(f"{world._ZH_POSITION[o.position]}有{_thing_zh(o)}" for o in scene.objects)


def _counted_zh(scene: world.Scene) -> str:
    counts = Counter(obj.combo for obj in scene.objects)
    return _join_zh([f"{world._ZH_NUMBERS[n]}个{world._ZH_COLOUR[colour]}的{world._ZH_SHAPE[shape]}"
                     for (colour, shape), n in counts.items()])


def _reversed(scene: world.Scene) -> world.Scene:
    return world.Scene(scene.objects[::-1], scene.background, scene.noise_seed)


FAMILIES: dict[str, Family] = {
    # "a large red circle on the left and a small blue square on the right"
    "canonical": Family(True, True, world.canonical_caption, world.canonical_caption_zh),
    # the same, objects named from the other end
    "reversed": Family(True, True, lambda s: world.canonical_caption(_reversed(s)),
                       lambda s: world.canonical_caption_zh(_reversed(s))),
    # "a red circle on the left and a blue square on the right"
    "no sizes": Family(False, True, lambda s: world._join_en(_things_en(s, place=True)), _placed_zh),
    # "a large red circle and a small blue square"
    "no places": Family(True, False, lambda s: world._join_en(_things_en(s, size=True)),
                        lambda s: _join_zh(_things_zh(s, size=True))),
    # "a red circle and a blue square": the natural phrasing
    "X and Y": Family(False, False, lambda s: world._join_en(_things_en(s)), lambda s: _join_zh(_things_zh(s))),
    "X, Y": Family(False, False, lambda s: ", ".join(_things_en(s)), lambda s: "，".join(_things_zh(s))),
    "X next to Y": Family(False, False, lambda s: _then("next to", _things_en(s)),
                          lambda s: _then_zh("旁边有", _things_zh(s))),
    "X with Y": Family(False, False, lambda s: _then("with", _things_en(s)),
                       lambda s: _then_zh("，还有", _things_zh(s))),
    # "two red circles and one blue square"
    "counts": Family(False, False, _counted_en, _counted_zh),
    "framed": Family(False, False, lambda s: "a photo of " + world._join_en(_things_en(s)),
                     lambda s: "照片里是" + _join_zh(_things_zh(s))),
}
LANGUAGES = ("en", "zh")


def caption(scene: world.Scene, family: str, language: str) -> str:
    return getattr(FAMILIES[family], language)(scene)


def content(scene: world.Scene, family: str) -> tuple[tuple[str, ...], ...]:
    """What a caption of the family says about the scene, as a sorted multiset of per-object facts."""
    said = FAMILIES[family]
    return tuple(sorted((o.colour, o.shape) + ((o.size,) if said.sizes else ()) + ((o.position,) if said.positions
                                                                                   else ()) for o in scene.objects))


def bag(text: str, language: str) -> Counter:
    """Words of an English caption, characters of a Chinese one (punctuation left out)."""
    return Counter(text.replace(",", " ").split()) if language == "en" else Counter(c for c in text if c not in "，、")


def is_negative(scene: world.Scene, other: world.Scene, kind: str, family: str) -> bool:
    """`other` is a hard negative for the scene's caption in this family: the family can tell them apart, and a
    swap keeps the bag of words in both languages (so only binding tells them apart)."""
    if kind not in FAMILIES[family].kinds or content(scene, family) == content(other, family):
        return False
    return kind not in SWAP_KINDS or all(bag(caption(scene, family, lang), lang) == bag(caption(other, family, lang),
                                                                                       lang) for lang in LANGUAGES)


def families_for(scene: world.Scene, other: world.Scene, kind: str) -> list[str]:
    """The families in which `other` (a twin of `kind`) is a hard negative for the scene."""
    return [family for family in FAMILIES if is_negative(scene, other, kind, family)]


def family_twin(scene: world.Scene, family: str, rng: np.random.Generator,
                kinds: tuple[str, ...] | None = None) -> tuple[str, world.Scene] | None:
    """A twin that is a hard negative in the family, of a kind drawn among those it expresses (and among `kinds`
    when given); None if none."""
    allowed = [kind for kind in FAMILIES[family].kinds if kinds is None or kind in kinds]
    if not allowed:
        return None
    for kind in rng.permutation(np.array(allowed)):
        made = MAKERS[str(kind)](scene, rng)
        if made is not None and is_negative(scene, made, str(kind), family):
            return str(kind), made
    return None
