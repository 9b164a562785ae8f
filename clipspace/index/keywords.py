"""The keyword channel: SQLite FTS5 over what a person types exactly: file names, folders, captions, tags, OCR text.

Latin words go through FTS5's unicode61 tokenizer (case and accents folded; `_`, `-` and `.` split words), so
`IMG_2041.jpg` is the words img, 2041 and jpg, and a query for `IMG_2041` finds it. Chinese, Japanese and Korean
write words without spaces: each of their characters is stored as a token of its own, and a run of them in a
query is searched as a phrase of those characters, which matches a word of any length. FTS5's trigram tokenizer
was the other candidate; it cannot match words of one or two characters, which most Chinese words are
(docs/decisions.md, "Keywords: SQLite FTS5, one token per CJK character, every word must match").

Every word of a query (but the English STOPWORDS around it) must match somewhere in the item (AND): the channel
answers for exact words and stays silent otherwise, which is what lets hybrid search fall back to the vector
channel for a description of a picture (an OR over "a", "on", "the" would match everything weakly and push the
real hits down).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from clipspace.index.records import ItemRecord

FIELDS = ("name", "folders", "caption", "tags", "ocr")
# bm25 weights per field, in FIELDS order: a file name or a tag typed exactly says more than one word of a caption;
# a word read in the picture (a sign's, a slide's title) more than one of a caption, though OCR can misread it.
# A version built before a field existed has fewer columns: FTS5 ignores the weights past its last one.
WEIGHTS = (8.0, 3.0, 1.0, 5.0, 2.0)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"([{_CJK}])")
_WORDS = re.compile(rf"[{_CJK}]+|[^\W_]+")

# Words a person writes around what they look for ("a receipt", "photos of the sea"): required, they would make
# every such query match nothing. English only: the model's other language, Chinese, is searched by character.
STOPWORDS = frozenset({"a", "an", "the", "of", "on", "in", "at", "to", "and", "or", "with", "without", "for",
    "from", "by", "near", "next", "this", "that", "these", "those", "is", "are", "was", "were", "be", "some",
    "any", "photo", "photos", "picture", "pictures", "image", "images"})

CREATE_KEYWORDS = (f"CREATE VIRTUAL TABLE keywords USING fts5({', '.join(FIELDS)}, "
                   "tokenize = 'unicode61 remove_diacritics 2')")


@dataclass(frozen=True)
class KeywordText:
    """What the channel indexes for one item, by field."""

    name: str
    folders: str
    caption: str
    tags: str
    ocr: str

    @classmethod
    def of(cls, item: ItemRecord) -> KeywordText:
        parts = PurePosixPath(item.path).parts
        return cls(name=parts[-1] if parts else "", folders=" ".join(parts[:-1]), caption=item.caption or "",
                   tags=" ; ".join(item.facts.tags), ocr=item.ocr_text or "")


def separated(text: str) -> str:
    """`text` as stored and searched: every CJK character stands apart, so unicode61 makes it one token."""
    return _CJK_CHAR.sub(r" \1 ", text)


def add_keywords(db: sqlite3.Connection, items: Iterable[ItemRecord]) -> None:
    """Index the words of `items` by item id (their rowid in the FTS table)."""
    texts = ((item.id, KeywordText.of(item)) for item in items)
    db.executemany(f"INSERT INTO keywords (rowid, {', '.join(FIELDS)}) VALUES (?, {', '.join('?' * len(FIELDS))})",
                   ((item_id, *(separated(getattr(text, field)) for field in FIELDS)) for item_id, text in texts))


def match_expression(query: str) -> str | None:
    """The FTS5 query for `query`: each word (or run of CJK characters) a quoted phrase, all of them required, the
    English words that only hold a sentence together (STOPWORDS) left out unless nothing else is left. None when
    the query holds no word at all (only punctuation or symbols)."""
    words = _WORDS.findall(query)
    meaningful = [word for word in words if word.casefold() not in STOPWORDS] or words
    phrases = [" ".join(word) if _CJK_CHAR.match(word) else word for word in meaningful]
    return " AND ".join(f'"{phrase}"' for phrase in phrases) or None


def bm25_order() -> str:
    """The SQL expression that ranks matches, best first when sorted ascending (FTS5's bm25 is negative)."""
    return f"bm25(keywords, {', '.join(str(weight) for weight in WEIGHTS)})"
