"""Attribute queries in words the world's captions never use ("a scarlet dot", "一个赤色的圆点").

A model trained from scratch on the world knows only the world's words; a locked pretrained text tower
may know that "scarlet" is a red. These queries measure that difference, over the world's own images.
English words here never occur in any world caption (tests/test_align_paraphrases.py checks it); the
Chinese words never occur either, though some share a character with a world word (蔚蓝 and 蓝), as
Chinese words do.
"""

from __future__ import annotations

from collections.abc import Callable

# (colour, shape) -> query, as evaluate.Phrasing; defined here so that training code may read the held-out words
# (wordnet_captions) without importing the evaluation
Phrasing = Callable[[str, str], str]

EN_COLOURS = {
    "red": ("scarlet", "crimson"), "orange": ("tangerine", "amber"), "yellow": ("lemon", "golden"),
    "green": ("emerald", "lime"), "blue": ("azure", "cobalt"), "purple": ("violet", "plum"),
    "pink": ("rose", "blush"), "black": ("ebony", "jet"),
}
EN_SHAPES = {
    "circle": ("dot", "ball"), "square": ("tile", "block"), "triangle": ("wedge", "pyramid"),
    "star": ("pentagram", "starfish"), "cross": ("crucifix", "cruciform"), "hexagon": ("honeycomb", "hex"),
}
ZH_COLOURS = {
    "red": ("赤色", "朱色"), "orange": ("橘色", "橘黄色"), "yellow": ("金色", "柠檬色"), "green": ("翠色", "碧色"),
    "blue": ("蔚蓝色", "湛蓝色"), "purple": ("紫罗兰色", "绛紫色"), "pink": ("桃色", "樱花色"),
    "black": ("乌黑色", "漆黑色"),
}
ZH_SHAPES = {
    "circle": ("圆点", "圆盘"), "square": ("方格", "四方块"), "triangle": ("楔形", "三边形"),
    "star": ("五芒星", "星状物"), "cross": ("加号", "十字架"), "hexagon": ("蜂巢形", "六棱形"),
}


def _english(variant: int) -> Phrasing:
    def phrase(colour: str, shape: str) -> str:
        adjective = EN_COLOURS[colour][variant]
        return f"{'an' if adjective[0] in 'aeiou' else 'a'} {adjective} {EN_SHAPES[shape][variant]}"
    return phrase


def _chinese(variant: int) -> Phrasing:
    return lambda colour, shape: f"一个{ZH_COLOURS[colour][variant]}的{ZH_SHAPES[shape][variant]}"


PHRASINGS: dict[str, tuple[Phrasing, ...]] = {"en": (_english(0), _english(1)), "zh": (_chinese(0), _chinese(1))}
