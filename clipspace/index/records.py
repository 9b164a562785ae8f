"""What meta.sqlite holds per item: the record types and the one table schema derived from ItemRecord's fields."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass

from clipspace.photos import PhotoFacts

UNKNOWN_FACTS = PhotoFacts(format=None, taken_at=None, taken_at_source=None)


@dataclass(frozen=True)
class ItemRecord:
    """One indexed image, as meta.sqlite stores it. `id` is stable for a path across reindexes.

    `facts` (capture time, camera, place, keywords, format) are stored as columns of their own, named as
    PhotoFacts names them, so that a filter is a WHERE clause.
    """

    id: int
    path: str
    sha256: str
    bytes: int
    mtime_ns: int
    width: int
    height: int
    caption: str | None
    facts: PhotoFacts = UNKNOWN_FACTS
    ocr_text: str | None = None  # the text read in the picture (--ocr): "" when it holds none, None when never read
    layout: str | None = None  # its colour layout (clipspace.index.layout), which confirms a duplicate


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float
    path: str
    caption: str | None
    record: ItemRecord | None = None  # the whole record, for the fields a result shows beside its path


# A new field of ItemRecord (or of PhotoFacts) becomes a column of every new version by these rules, typed here once.
_SQL_TYPES = {int: "INTEGER NOT NULL", str: "TEXT NOT NULL", str | None: "TEXT", float | None: "REAL",
              tuple[str, ...]: "TEXT NOT NULL"}  # a tuple of strings is stored as a JSON list
_CONSTRAINTS = {"id": "PRIMARY KEY", "path": "UNIQUE"}


def _columns(kind: type) -> tuple[tuple[str, object], ...]:
    """(name, type) of every column of `kind`, a nested dataclass's fields in its place."""
    hints = typing.get_type_hints(kind)
    found: list[tuple[str, object]] = []
    for field in dataclasses.fields(kind):
        hint = hints[field.name]
        found.extend(_columns(hint) if dataclasses.is_dataclass(hint) else [(field.name, hint)])
    return tuple(found)


_FIELDS = _columns(ItemRecord)
_NESTED = {name: kind for name, kind in typing.get_type_hints(ItemRecord).items() if dataclasses.is_dataclass(kind)}
# Each field of ItemRecord in order: its nested dataclass (None for a plain value) and how many columns it takes.
_LAYOUT = tuple((_NESTED.get(field.name), len(dataclasses.fields(_NESTED[field.name])) if field.name in _NESTED
                 else 1) for field in dataclasses.fields(ItemRecord))
# Columns whose NULL means "not done yet" rather than "unknown": a version built before one existed holds all that
# it knows without it, and the builder fills it when asked to (the OCR text, with --ocr) or when it decodes the
# picture again (the layout: an item without one is grouped by its vector alone).
_DONE_ON_DEMAND = frozenset({"ocr_text", "layout"})
_JSON_COLUMNS = {index for index, (_, kind) in enumerate(_FIELDS) if kind == tuple[str, ...]}
COLUMNS = ", ".join(name for name, _ in _FIELDS)
# Besides its record, each item stores its row in the image vectors and, when captioned, in the caption vectors.
CREATE_ITEMS = "CREATE TABLE items ({}, row INTEGER NOT NULL UNIQUE, caption_row INTEGER UNIQUE)".format(
    ", ".join(" ".join(filter(None, (name, _SQL_TYPES[kind], _CONSTRAINTS.get(name)))) for name, kind in _FIELDS))
INSERT_ITEM = f"INSERT INTO items ({COLUMNS}, row, caption_row) VALUES ({', '.join('?' * (len(_FIELDS) + 2))})"


def item_row(item: ItemRecord, row: int, caption_row: int | None) -> tuple:
    """The values of INSERT_ITEM for one item, in COLUMNS order."""
    values = []  # not dataclasses.astuple: it deep-copies, slow at 1M items
    for name, value in vars(item).items():
        values.extend(vars(value).values() if name in _NESTED else (value,))
    for index in _JSON_COLUMNS:
        values[index] = json.dumps(values[index], ensure_ascii=False)
    return (*values, row, caption_row)


def record_from_row(values: Sequence) -> ItemRecord:
    """An ItemRecord from the values of COLUMNS, as item_row stored them."""
    values = list(values)
    for index in _JSON_COLUMNS:
        values[index] = () if values[index] == "[]" else tuple(json.loads(values[index]))  # most have none
    given, start = [], 0
    for nested, width in _LAYOUT:
        given.append(nested(*values[start:start + width]) if nested else values[start])
        start += width
    return ItemRecord(*given)


def select_list(existing: Sequence[str], prefix: str = "") -> str:
    """COLUMNS for a SELECT from a table (aliased `prefix`) that has the columns `existing`: a version built before
    a column existed reads it as unknown (NULL, or no tags), so every version opens with today's code."""
    present = set(existing)
    return ", ".join(prefix + name if name in present else f"'[]' AS {name}" if index in _JSON_COLUMNS
                     else f"NULL AS {name}" for index, (name, _) in enumerate(_FIELDS))


def complete_columns(existing: Sequence[str]) -> bool:
    """Whether a table with the columns `existing` holds every field of today's records (those done on demand
    aside: their absence is the truth, "not done yet")."""
    return {name for name, _ in _FIELDS} - _DONE_ON_DEMAND <= set(existing)
