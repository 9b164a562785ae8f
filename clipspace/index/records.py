"""What meta.sqlite holds per item: the record types and the one table schema derived from ItemRecord's fields."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class ItemRecord:
    """One indexed image, as meta.sqlite stores it. `id` is stable for a path across reindexes."""

    id: int
    path: str
    sha256: str
    bytes: int
    mtime_ns: int
    width: int
    height: int
    caption: str | None


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float
    path: str
    caption: str | None


# A new field of ItemRecord becomes a column of every new version by these rules, typed here once.
_SQL_TYPES = {int: "INTEGER NOT NULL", str: "TEXT NOT NULL", str | None: "TEXT"}
_CONSTRAINTS = {"id": "PRIMARY KEY", "path": "UNIQUE"}
_FIELDS = tuple((field.name, typing.get_type_hints(ItemRecord)[field.name]) for field in dataclasses.fields(ItemRecord))

COLUMNS = ", ".join(name for name, _ in _FIELDS)
# Besides its record, each item stores its row in the image vectors and, when captioned, in the caption vectors.
CREATE_ITEMS = "CREATE TABLE items ({}, row INTEGER NOT NULL UNIQUE, caption_row INTEGER UNIQUE)".format(
    ", ".join(" ".join(filter(None, (name, _SQL_TYPES[kind], _CONSTRAINTS.get(name)))) for name, kind in _FIELDS))
INSERT_ITEM = f"INSERT INTO items ({COLUMNS}, row, caption_row) VALUES ({', '.join('?' * (len(_FIELDS) + 2))})"


def item_row(item: ItemRecord, row: int, caption_row: int | None) -> tuple:
    """The values of INSERT_ITEM for one item, in COLUMNS order."""
    return (*vars(item).values(), row, caption_row)  # dataclasses.astuple deep-copies: slow at a million items
