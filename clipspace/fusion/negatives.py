"""Negatives from a caption's text alone (NegCLIP's recipe): attributes swapped, relations reversed, numbers changed.

A matcher trained on a user's captioned folder has no twin renders to tell a scene from its look-alike, so its hard
negatives are rewritten captions: the same words, bound the other way, which a bag of words cannot tell apart.

English is read with a small rule set, not a parser (spaCy's trained pipelines are not on PyPI): the words between
closed-class words and punctuation form a run; the run's last word that can be a noun is its head, and the words
before it that can be adjectives are its attributes. WordNet's part-of-speech lists (Debian's `wordnet-base`, read
by nltk's reader; no download) say which words can be nouns or adjectives; without them every open-class word that
is not a known colour or size counts as a noun. Chinese has no spaces to split runs on, so it is read with word
lists for the world's Chinese grammar ("左边有一个小的红色圆形，…"): colours and sizes, places, counts.

Every negative differs from its caption; a caption with nothing to negate ("a sunset") has none.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipspace.wordnet import WORDNET_DIR, wordnet_reader

log = logging.getLogger(__name__)

KINDS = ("attribute_swap", "relation_swap", "number_change")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


COLOURS = _words("red orange yellow green blue purple pink black white grey gray brown violet cyan magenta "
                 "gold silver beige navy teal maroon")
SIZES = _words("small large big little tiny huge giant tall short long wide narrow")
ATTRIBUTE_CLASSES = {"colour": COLOURS, "size": SIZES}  # only words of one class are swapped for each other
# Closed-class words end a run of attributes and nouns ("a red circle | on | the left")
CLOSED = _words("a an the this that these those some any each every no and or but nor with without of on in at "
                "to from by for into onto over under above below beneath behind beside near next inside outside "
                "between among around through across along against toward towards is are was were be been being "
                "it its their his her there here has have had while as than then which who whose where when "
                "very too also not")
POSITIONS = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "upper": "lower",
             "lower": "upper", "center": None, "centre": None, "middle": None}
# "X REL Y" reads differently as "Y REL X"; symmetric relations ("next to", "and", "with") are left alone
RELATIONS = (("to", "the", "left", "of"), ("to", "the", "right", "of"), ("left", "of"), ("right", "of"),
             ("on", "top", "of"), ("in", "front", "of"), ("above",), ("below",), ("under",), ("beneath",),
             ("over",), ("behind",), ("inside",), ("on",), ("in",))
DETERMINERS = _words("a an the this that some one two three four five six seven eight nine ten")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

ZH_CLASSES = {"colour": re.compile("红色|橙色|黄色|绿色|蓝色|紫色|粉色|黑色|白色|灰色|棕色"),
              "size": re.compile("[小大](?=的)")}
ZH_POSITIONS = {"左边": "右边", "右边": "左边", "左侧": "右侧", "右侧": "左侧", "上方": "下方", "下方": "上方",
                "上面": "下面", "下面": "上面", "中间": None, "中央": None}
ZH_NUMBERS = "零一两三四五六七八九十"
ZH_COUNT = re.compile(f"[{ZH_NUMBERS}二](?=[个只条张位])")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_ARTICLE = re.compile(r"\b([Aa]n?) ([A-Za-z])")
_WORD = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*|\d+")


@dataclass(frozen=True)
class Negative:
    kind: str  # one of KINDS
    text: str


@dataclass(frozen=True)
class Lexicon:
    """Which words can be nouns and which adjectives: WordNet's lists, or the fallback rule."""

    is_noun: Callable[[str], bool]
    is_adjective: Callable[[str], bool]
    is_participle: Callable[[str], bool]  # "sitting", "parked": a verb form ends a run even where it is a noun too
    source: str


@dataclass(frozen=True)
class _Word:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Phrase:
    """A noun with the attributes before it: words[head] is the noun."""

    words: tuple[_Word, ...]

    @property
    def head(self) -> _Word:
        return self.words[-1]

    @property
    def span(self) -> tuple[int, int]:
        return self.words[0].start, self.words[-1].end


@functools.cache
def load_lexicon(folder: Path = WORDNET_DIR) -> Lexicon:
    """WordNet's noun and adjective lists when nltk and the Debian files are there, else the fallback (logged)."""
    try:
        reader = wordnet_reader(folder)
    except (ImportError, OSError, ValueError) as error:
        log.warning("WordNet unavailable (%s): nouns and adjectives told apart by the fallback lists; install "
                    "Debian's wordnet-base and nltk for an open vocabulary", error)
        return Lexicon(lambda word: word not in COLOURS | SIZES, lambda word: word in COLOURS | SIZES,
                       lambda word: word.endswith("ing"), "fallback")

    def is_noun(word: str) -> bool:
        return reader.morphy(word, "n") is not None

    def is_adjective(word: str) -> bool:
        return word in COLOURS | SIZES or reader.morphy(word, "a") is not None

    def is_participle(word: str) -> bool:
        return word.endswith(("ing", "ed")) and reader.morphy(word, "v") not in (None, word)

    return Lexicon(is_noun, is_adjective, is_participle, f"wordnet {folder}")


def text_negatives(caption: str, rng: np.random.Generator, lexicon: Lexicon | None = None) -> list[Negative]:
    """One negative of each kind the caption allows, in KINDS order; each differs from the caption."""
    if _CJK.search(caption):
        made = {"attribute_swap": _zh_attribute_swap(caption, rng), "relation_swap": _zh_relation_swap(caption, rng),
                "number_change": _zh_number_change(caption, rng)}
    else:
        words = [_Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(caption)]
        lexicon = lexicon or load_lexicon()
        phrases = _phrases(caption, words, lexicon)
        made = {"attribute_swap": _attribute_swap(caption, phrases, lexicon, rng),
                "relation_swap": _relation_swap(caption, words, phrases, rng),
                "number_change": _number_change(caption, words, rng)}
    return [Negative(kind, made[kind]) for kind in KINDS if made[kind] is not None and made[kind] != caption]


# ------------------------------------------------------------------------------------------------------- English

def _phrases(caption: str, words: list[_Word], lexicon: Lexicon) -> list[_Phrase]:
    """Runs of open-class words, not broken by punctuation, each cut after its last word that can be a noun."""
    runs: list[list[_Word]] = [[]]
    for before, word in zip([None, *words], words, strict=False):
        lower = word.text.lower()
        broken = before is not None and caption[before.end:word.start].strip() != ""
        closed = lower in CLOSED or lower.isdigit() or lower in NUMBER_WORDS or lexicon.is_participle(lower)
        if closed or broken:
            runs.append([])
        if not closed:
            runs[-1].append(word)
    phrases = []
    for run in runs:
        nouns = [i for i, word in enumerate(run) if lexicon.is_noun(word.text.lower())]
        if nouns:
            phrases.append(_Phrase(tuple(run[:nouns[-1] + 1])))
    return phrases


def _attribute_class(word: str) -> str:
    return next((name for name, members in ATTRIBUTE_CLASSES.items() if word in members), "other")


def _attribute_swap(caption: str, phrases: list[_Phrase], lexicon: Lexicon, rng: np.random.Generator) -> str | None:
    """Two nouns exchange attributes of one class ("a red circle and a blue square" → "a blue circle and a red
    square"): colours for colours, sizes for sizes, other adjectives for other adjectives."""
    attributes = [[(w, _attribute_class(w.text.lower())) for w in phrase.words[:-1]
                   if lexicon.is_adjective(w.text.lower())] for phrase in phrases]
    swaps = [(a, b) for i in range(len(phrases)) for j in range(i + 1, len(phrases))
             for a, kind_a in attributes[i] for b, kind_b in attributes[j]
             if kind_a == kind_b and a.text.lower() != b.text.lower()]
    if not swaps:
        return None
    a, b = swaps[int(rng.integers(len(swaps)))]
    return _rewrite(caption, [(a.start, a.end, b.text), (b.start, b.end, a.text)])


def _relation_swap(caption: str, words: list[_Word], phrases: list[_Phrase], rng: np.random.Generator) -> str | None:
    """"X on Y" → "Y on X" for an asymmetric relation between two nouns; else two places exchanged ("… on the
    left, … on the right" → "… on the right, … on the left"); else a lone place turned to its opposite."""
    binary = _binary_relations(words, phrases)
    if binary:
        first, second = binary[int(rng.integers(len(binary)))]
        (s1, e1), (s2, e2) = first.span, second.span
        return _rewrite(caption, [(s1, e1, caption[s2:e2]), (s2, e2, caption[s1:e1])])
    places = _places(caption, words, phrases)
    pairs = [(a, b) for i, a in enumerate(places) for b in places[i + 1:]
             if a[2].lower() != b[2].lower() and a[3] != b[3]]
    if pairs:
        (s1, e1, first, _), (s2, e2, second, _) = pairs[int(rng.integers(len(pairs)))]
        return _rewrite(caption, [(s1, e1, second), (s2, e2, first)])
    flips = [w for w in words if POSITIONS.get(w.text.lower())]
    if flips:
        word = flips[int(rng.integers(len(flips)))]
        return _rewrite(caption, [(word.start, word.end, _same_case(POSITIONS[word.text.lower()], word.text))])
    return None


def _places(caption: str, words: list[_Word], phrases: list[_Phrase]) -> list[tuple[int, int, str, str]]:
    """(start, end, text, owner) of each place phrase ("on the left"), with the thing it places: places of two
    things that read the same ("a red circle on the left, a red circle on the right") are not worth exchanging."""
    things = [p for p in phrases if p.head.text.lower() not in POSITIONS]
    found = []
    for i, word in enumerate(words):
        if word.text.lower() not in POSITIONS:
            continue
        first = i
        while first > 0 and i - first < 2 and words[first - 1].text.lower() in CLOSED:
            first -= 1  # "on the left", "at the top"
        owner = next((p for p in reversed(things) if p.head.end <= words[first].start), None)
        owner_text = "" if owner is None else caption[owner.span[0]:owner.span[1]].lower()
        found.append((words[first].start, word.end, caption[words[first].start:word.end], owner_text))
    return found


def _binary_relations(words: list[_Word], phrases: list[_Phrase]) -> list[tuple[_Phrase, _Phrase]]:
    """(X, Y) for each "X REL [the] Y" where Y is a thing, not a place ("on the left" relates nothing)."""
    ending = {phrase.head.end: phrase for phrase in phrases}
    starting = {phrase.words[0].start: phrase for phrase in phrases}
    lowered = [w.text.lower() for w in words]
    found = []
    for i, word in enumerate(words):
        first = ending.get(word.end)
        if first is None:
            continue
        for relation in RELATIONS:
            after = i + 1 + len(relation)
            if tuple(lowered[i + 1:after]) != relation:
                continue
            if after < len(words) and lowered[after] in DETERMINERS:
                after += 1
            second = starting.get(words[after].start) if after < len(words) else None
            if second is not None and second.head.text.lower() not in POSITIONS:
                found.append((first, second))
            break
    return found


def _number_change(caption: str, words: list[_Word], rng: np.random.Generator) -> str | None:
    """A count changed ("two dogs" → "three dogs", "3 cars" → "4 cars"); "one" becomes "two", never "zero"."""
    counts = [(w, int(w.text) if w.text.isdigit() else NUMBER_WORDS.index(w.text.lower())) for w in words
              if w.text.isdigit() or w.text.lower() in NUMBER_WORDS]
    if not counts:
        return None
    word, value = counts[int(rng.integers(len(counts)))]
    new = value + 1 if value <= 2 or rng.random() < 0.5 else value - 1
    text = str(new) if word.text.isdigit() or new >= len(NUMBER_WORDS) else NUMBER_WORDS[new]
    return _rewrite(caption, [(word.start, word.end, _same_case(text, word.text))])


def _same_case(text: str, like: str) -> str:
    return text.capitalize() if like[:1].isupper() else text


def _rewrite(caption: str, edits: list[tuple[int, int, str]]) -> str:
    """The caption with non-overlapping (start, end, replacement) edits applied, English articles agreeing again."""
    for start, end, text in sorted(edits, reverse=True):
        caption = caption[:start] + text + caption[end:]
    return _ARTICLE.sub(lambda m: m[1][0] + ("n" if m[2].lower() in "aeiou" else "") + " " + m[2], caption)


# ------------------------------------------------------------------------------------------------------- Chinese

def _swap_two(caption: str, matches: list[re.Match], rng: np.random.Generator) -> str | None:
    pairs = [(a, b) for i, a in enumerate(matches) for b in matches[i + 1:] if a.group() != b.group()]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    return _rewrite(caption, [(a.start(), a.end(), b.group()), (b.start(), b.end(), a.group())])


def _zh_attribute_swap(caption: str, rng: np.random.Generator) -> str | None:
    """Two colours (or two sizes) exchanged between the objects they describe."""
    kinds = [kind for kind, pattern in ZH_CLASSES.items() if len({m.group() for m in pattern.finditer(caption)}) > 1]
    if not kinds:
        return None
    return _swap_two(caption, list(ZH_CLASSES[kinds[int(rng.integers(len(kinds)))]].finditer(caption)), rng)


def _zh_relation_swap(caption: str, rng: np.random.Generator) -> str | None:
    """Two places exchanged between their objects, else a lone place turned to its opposite."""
    places = list(re.finditer("|".join(ZH_POSITIONS), caption))
    swapped = _swap_two(caption, places, rng)
    if swapped is not None:
        return swapped
    flips = [m for m in places if ZH_POSITIONS[m.group()]]
    if not flips:
        return None
    match = flips[int(rng.integers(len(flips)))]
    return _rewrite(caption, [(match.start(), match.end(), ZH_POSITIONS[match.group()])])


def _zh_number_change(caption: str, rng: np.random.Generator) -> str | None:
    """A count before a measure word changed ("一个" → "两个", "三个" → "两个" or "四个")."""
    counts = list(ZH_COUNT.finditer(caption))
    if not counts:
        return None
    match = counts[int(rng.integers(len(counts)))]
    value = 2 if match.group() == "二" else ZH_NUMBERS.index(match.group())
    new = value + 1 if value <= 2 or rng.random() < 0.5 else value - 1
    return _rewrite(caption, [(match.start(), match.end(), ZH_NUMBERS[min(new, len(ZH_NUMBERS) - 1)])])
