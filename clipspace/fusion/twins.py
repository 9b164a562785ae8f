"""Hard negatives from scene structure: twins of a world scene that a bag of words cannot tell apart.

A twin keeps the scene's background and noise seed, so the only difference between the two renders is
the one change: colours swapped between two objects, positions swapped, sizes swapped, or a count changed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clipspace.align import world

KINDS = ("colour_swap", "position_swap", "size_swap", "count_change")


def _ordered(scene: world.Scene, objects: list[world.SceneObject]) -> world.Scene:
    """Objects in slot order, as the world's canonical captions list them."""
    return replace(scene, objects=tuple(sorted(objects, key=lambda o: world.POSITIONS.index(o.position))))


def _two_differing(scene: world.Scene, attribute: str, rng: np.random.Generator) -> tuple[int, int] | None:
    pairs = [(i, j) for i in range(len(scene.objects)) for j in range(i + 1, len(scene.objects))
             if getattr(scene.objects[i], attribute) != getattr(scene.objects[j], attribute)]
    return pairs[int(rng.integers(len(pairs)))] if pairs else None


def _swap(scene: world.Scene, attribute: str, rng: np.random.Generator) -> world.Scene | None:
    """Two objects that differ in `attribute` exchange it; None when no two objects differ in it."""
    pair = _two_differing(scene, attribute, rng)
    if pair is None:
        return None
    i, j = pair
    objects = list(scene.objects)
    objects[i], objects[j] = (replace(objects[i], **{attribute: getattr(scene.objects[j], attribute)}),
                              replace(objects[j], **{attribute: getattr(scene.objects[i], attribute)}))
    return _ordered(scene, objects)


def colour_swap(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """Two objects of different colours exchange colours: the same words, bound the other way."""
    return _swap(scene, "colour", rng)


def position_swap(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """Two different-looking objects exchange places."""
    candidates = [(i, j) for i in range(len(scene.objects)) for j in range(i + 1, len(scene.objects))
                  if replace(scene.objects[i], position="") != replace(scene.objects[j], position="")]
    if not candidates:
        return None
    i, j = candidates[int(rng.integers(len(candidates)))]
    objects = list(scene.objects)
    objects[i], objects[j] = (replace(objects[i], position=scene.objects[j].position),
                              replace(objects[j], position=scene.objects[i].position))
    return _ordered(scene, objects)


def size_swap(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """Two objects of different sizes exchange sizes."""
    return _swap(scene, "size", rng)


def count_change(scene: world.Scene, rng: np.random.Generator) -> world.Scene | None:
    """One object more (a copy of one in a free slot) or, in a scene of several, one object fewer."""
    objects = list(scene.objects)
    free = [p for p in world.POSITIONS if p not in {o.position for o in objects}]
    if len(objects) > 1 and (not free or len(objects) == 3 or rng.random() < 0.5):
        del objects[int(rng.integers(len(objects)))]
    elif free:
        copy = objects[int(rng.integers(len(objects)))]
        objects.append(replace(copy, position=free[int(rng.integers(len(free)))]))
    else:
        return None
    return _ordered(scene, objects)


MAKERS = {"colour_swap": colour_swap, "position_swap": position_swap, "size_swap": size_swap,
          "count_change": count_change}


def twin(scene: world.Scene, rng: np.random.Generator,
         kinds: tuple[str, ...] = KINDS) -> tuple[str, world.Scene] | None:
    """A twin of one of `kinds`, drawn among those the scene allows; None if it allows none of them."""
    for kind in rng.permutation(np.array(kinds)):
        made = MAKERS[str(kind)](scene, rng)
        if made is not None and world.canonical_caption(made) != world.canonical_caption(scene):
            return str(kind), made
    return None
