"""The build plan: every listed file beside what the previous version knew of its path, in SQLite rather than RAM.

A listing of a hundred million files does not fit in a Python dict; in a scratch SQLite file it costs disk, and
the previous version's meta.sqlite is joined to it by path without loading either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from clipspace.index.records import ItemRecord, complete_columns, record_from_row, select_list
from index_builder.files import Listed, Movable

_INSERT_BATCH = 4096
_LISTED = "l.seq, l.path, l.size, l.mtime_ns, l.has_caption, l.rejected"  # the first six fields of PlanRow


class PlanRow(NamedTuple):
    """A listed file and, when its path was indexed before, that item's record and vector rows (else None).

    `complete` is False when the previous version was built before some of today's record fields existed: its
    record cannot be reused without reading the file (once) for them.
    """

    seq: int
    path: str
    size: int
    mtime_ns: int
    has_caption: bool
    rejected: str | None
    previous: ItemRecord | None
    row: int | None
    caption_row: int | None
    complete: bool

    @property
    def id(self) -> int | None:
        return self.previous.id if self.previous else None

    @property
    def sha256(self) -> str | None:
        return self.previous.sha256 if self.previous else None


class Plan:
    """A scratch SQLite file beside the staged version; `close` deletes it."""

    def __init__(self, path: Path, previous_meta: Path | None) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript("""PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE listed (seq INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                                 mtime_ns INTEGER NOT NULL, has_caption INTEGER NOT NULL, rejected TEXT);""")
        self._previous = previous_meta is not None
        self._complete = True
        self._known_text = self._known_layout = "NULL"
        if self._previous:
            self._db.execute("ATTACH DATABASE ? AS prev", (f"file:{previous_meta}?mode=ro",))
            existing = [column for _, column, *_ in self._db.execute("PRAGMA prev.table_info(items)")]
            self._columns = select_list(existing, "p.")
            self._complete = complete_columns(existing)
            self._known_text = "ocr_text" if "ocr_text" in existing else "NULL"  # built before --ocr existed
            self._known_layout = "layout" if "layout" in existing else "NULL"  # before duplicates were confirmed

    def add_listing(self, listed: Iterable[Listed]) -> int:
        """Store the listing as it streams in; answers how many files were listed."""
        count, batch = 0, []
        for seq, entry in enumerate(listed):
            batch.append((seq, entry.path, entry.size, entry.mtime_ns, entry.has_caption, entry.rejected))
            if len(batch) == _INSERT_BATCH:
                self._insert(batch)
                batch = []
            count = seq + 1
        self._insert(batch)
        return count

    def rows(self) -> Iterator[PlanRow]:
        """Every listed file in listing order, joined by path with the previous version's item."""
        if not self._previous:
            for row in self._db.execute(f"SELECT {_LISTED} FROM listed l ORDER BY l.seq"):
                yield PlanRow(*row, None, None, None, True)
            return
        query = (f"SELECT {_LISTED}, p.row, p.caption_row, {self._columns} FROM listed l "
                 "LEFT JOIN prev.items p ON p.path = l.path ORDER BY l.seq")
        for values in self._db.execute(query):
            listed, (row, caption_row), record = values[:6], values[6:8], values[8:]
            previous = record_from_row(record) if row is not None else None
            yield PlanRow(*listed, previous, row, caption_row, self._complete)

    def removed(self) -> int:
        """Previous items whose path is no longer listed."""
        if not self._previous:
            return 0
        return self._db.execute("SELECT count(*) FROM prev.items WHERE path NOT IN (SELECT path FROM listed)"
                                ).fetchone()[0]

    def movable(self) -> dict[str, Movable]:
        """The vectors of vanished paths by content hash: a moved or renamed file finds its vector here.

        Only vanished paths qualify, so this map is as large as the change, not as the corpus.
        """
        if not self._previous:
            return {}
        query = (f"SELECT sha256, row, width, height, {self._known_text}, {self._known_layout} FROM prev.items "
                 "WHERE path NOT IN (SELECT path FROM listed)")
        return {sha256: Movable(*known) for sha256, *known in self._db.execute(query)}

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def _insert(self, batch: list[tuple]) -> None:
        self._db.executemany("INSERT INTO listed VALUES (?,?,?,?,?,?)", batch)
        self._db.commit()
