"""WordNet's words for the world's colours and shapes in training captions (issue 21, part 3).

The LiT model's text tower is locked, so a paraphrase ("a scarlet dot") finds its pictures only as far as MiniLM
puts it near the world's own words, which is not far (benchmarks/minilm_ceiling.py: 0.27). Training the *image*
tower on captions that also say "a cerise disk" or "a vermilion circlet" moves each image vector towards the
centre of many phrasings of its colour and shape, where more of MiniLM's neighbourhood of "red" lies, instead of
onto the one word the world uses. The words come from outside the world (Debian's WordNet 3.0, `wordnet-base`,
read by nltk offline through `clipspace.wordnet`), never from the evaluation's paraphrases: every word
of `paraphrases.EN_COLOURS` / `EN_SHAPES` is held out, with any WordNet entry that contains one ("jet black",
"cobalt blue", "wedge shape"), so the paraphrase P@10 stays a measure of words neither training nor its tuning saw.

English only: MiniLM reads Chinese as `[UNK]`, so Chinese captions pass through unchanged (their colour and shape
words are not English tokens the substitution matches).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from clipspace.align.paraphrases import EN_COLOURS, EN_SHAPES
from clipspace.align.world import COLOURS, SHAPES
from clipspace.wordnet import wordnet_reader

# The evaluation's paraphrase words: training never sees them, nor any WordNet entry with one of them as a word.
HELD_OUT = frozenset(word for words in (*EN_COLOURS.values(), *EN_SHAPES.values()) for word in words)

# The senses of each world word that mean what the world draws (WordNet synset names): the colour itself as a noun
# and as an adjective, the plane figure. Other senses are junk here ("blue" = gloomy, "star" = a celebrity,
# "square" = a plaza, "cross" = a hybrid). Colour nouns bring their hyponyms (red: cerise, vermilion, …); shapes
# bring their hyponyms and the named hypernyms where a shape is one (a circle is an ellipse, a square a rectangle).
COLOUR_SENSES = {
    "red": ("red.n.01", "red.s.01"), "orange": ("orange.n.02", "orange.s.01"),
    "yellow": ("yellow.n.01", "yellow.s.01"), "green": ("green.n.01", "green.s.01"),
    "blue": ("blue.n.01", "blue.s.01"), "purple": ("purple.n.01", "purple.s.01"),
    "pink": ("pink.n.01", "pink.s.01"), "black": ("black.n.01", "black.a.01"),
}
SHAPE_SENSES = {
    "circle": ("circle.n.01", "circle.n.03", "disk.n.01"), "square": ("square.n.01", "square.n.04", "quadrate.n.02"),
    "triangle": ("triangle.n.01", "triangle.n.02"), "star": ("star.n.05", "asterisk.n.01"),
    "cross": ("greek_cross.n.01",), "hexagon": ("hexagon.n.01",),
}
SHAPE_HYPERNYMS = {"circle": ("ellipse.n.01",), "square": ("rectangle.n.01",)}
# WordNet entries under those senses that are not true of what the world draws: triangles of other angles than
# the world's (near-equilateral) one, star figures with six points, a round mechanism, a "saucer", a "cubelike"
# object, the circle's hyponyms that are lines (an equator), a point or a spinal disc, and hues halfway to another
# world colour (magenta, fuschia and indigo lie between red or blue and purple, cyan between green and blue).
# Pentacle and pentangle are the held-out "pentagram"'s own synset: held out with it.
NOT_THE_WORLDS = frozenset({
    "obtuse triangle", "obtuse-angled triangle", "right triangle", "right-angled triangle", "scalene triangle",
    "oblique triangle", "acute triangle", "acute-angled triangle", "cuneus", "hexagram", "asterism", "saucer",
    "epicycle", "circle of curvature", "osculating circle", "equator", "point", "intervertebral disc",
    "intervertebral disk", "magenta", "fuschia", "indigo", "cyan", "pentangle", "pentacle",
})
_COLOUR_STEMS = {"red": "redd", "orange": "orang", "yellow": "yellow", "green": "green", "blue": "blu",
                 "purple": "purpl", "pink": "pink", "black": "black"}


@dataclass(frozen=True)
class Lexicon:
    """WordNet's other words for each world colour and shape, every held-out and ambiguous one removed."""

    colours: Mapping[str, tuple[str, ...]]
    shapes: Mapping[str, tuple[str, ...]]

    def words(self) -> frozenset[str]:
        return frozenset(word for table in (self.colours, self.shapes) for words in table.values() for word in words)


@cache
def wordnet_lexicon() -> Lexicon:
    """The lexicon from Debian's WordNet; an error that says what to install where it is missing."""
    reader = wordnet_reader()
    colours = {colour: _lemmas(reader, senses, hyponym_depth=2) for colour, senses in COLOUR_SENSES.items()}
    shapes = {shape: _lemmas(reader, senses + SHAPE_HYPERNYMS.get(shape, ()), hyponym_depth=1)
              for shape, senses in SHAPE_SENSES.items()}
    return Lexicon(_clean(colours, COLOURS), _clean(shapes, SHAPES))


def _lemmas(reader, senses: tuple[str, ...], hyponym_depth: int) -> set[str]:
    words: set[str] = set()
    for name in senses:
        level = [reader.synset(name)]
        for depth in range(hyponym_depth + 1):
            words.update(lemma.replace("_", " ") for synset in level for lemma in synset.lemma_names())
            if depth < hyponym_depth and name.split(".")[1] == "n":
                level = [hyponym for synset in level for hyponym in synset.hyponyms()]
    return words


def _clean(table: dict[str, set[str]], world_words: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Lower-case every word (Greek cross, Prussian blue); drop qualities (redness), mixtures naming another world
    word (orange red, bluish green), held-out words and entries containing one, the world's own words, and words
    two classes claim."""
    def keep(word: str, own: str) -> bool:
        tokens = re.split(r"[ \-]", word)
        others = [stem for name, stem in _COLOUR_STEMS.items() if name != own] + [w for w in world_words if w != own]
        return (not word.endswith(("ness", "ity")) and word not in world_words
                and word not in NOT_THE_WORLDS and not HELD_OUT.intersection(tokens)
                and not any(token.startswith(other) for token in tokens for other in others))

    kept = {own: {word.lower() for word in words if keep(word.lower(), own)} for own, words in table.items()}
    claimed = [word for words in kept.values() for word in words]
    return {own: tuple(sorted(word for word in words if claimed.count(word) == 1)) for own, words in kept.items()}


_WORD = re.compile(r"\b(?:(a|an|A|An) )?(" + "|".join(COLOURS + SHAPES) + r")\b(?!-)")


def with_wordnet_words(caption: str, rng: np.random.Generator, share: float, lexicon: Lexicon) -> str:
    """The caption with each colour and shape word replaced, with probability `share`, by one of WordNet's words
    for it (drawn uniformly), its article mended ("an orange" → "a tangerine").

    Every colour or shape word of a world caption describes an object of that colour or shape, so a synonym of
    the same class keeps the caption true of the scene. Plurals ("circles") and words inside a compound
    ("five-pointed star") are left alone.
    """
    def substitute(match: re.Match) -> str:
        article, word = match.group(1), match.group(2)
        if match.string[max(0, match.start(2) - 8):match.start(2)] == "pointed " or rng.random() >= share:
            return match.group(0)
        options = lexicon.colours.get(word) or lexicon.shapes.get(word)
        if not options:
            return match.group(0)
        new = options[int(rng.integers(len(options)))]
        if article is None:
            return new
        mended = "an" if new[0] in "aeiou" else "a"
        return f"{mended.capitalize() if article[0] == 'A' else mended} {new}"

    return _WORD.sub(substitute, caption)
