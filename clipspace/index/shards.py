"""Vectors on disk as shards: written a batch at a time, read memory-mapped, carried to the next version by hard link.

A shard is a raw file of little-endian rows (float32 vectors; float16 patch tokens, flattened), its row count in the
manifest, so a writer can append to
it batch by batch without knowing its final length, and a reader maps it without loading it. A shard of the
previous version whose rows the new version keeps unchanged, in the same place, is hard-linked instead of copied:
a reindex that adds files rewrites only the last shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from clipspace.index.manifest import Shard

SHARD_ROWS = 65_536  # 32 MiB at dim 128, 128 MiB at dim 512: few files at 100M images, cheap to rewrite one
FLOAT32, FLOAT16 = np.dtype("<f4"), np.dtype("<f2")
SUFFIXES = {FLOAT32: ".f32", FLOAT16: ".f16"}
COPY_CHUNK_ROWS = 8_192  # rows gathered from the previous version at a time: bounds the writer's memory


class ShardedVectors:
    """A version's shards seen as one read-only (rows, dim) array, memory-mapped (float32 unless told)."""

    def __init__(self, folder: Path, shards: Sequence[Shard], dim: int, dtype: np.dtype = FLOAT32) -> None:
        self.folder = Path(folder)
        self.shards = tuple(shards)
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.starts = np.cumsum([0, *(shard.rows for shard in self.shards)])
        self._maps: dict[int, np.ndarray] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.starts[-1]), self.dim

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, rows: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows by position (an int, a slice or an array of positions), gathered into memory."""
        if isinstance(rows, int | np.integer):
            return self.gather([int(rows)])[0]
        positions = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        return self.gather(positions)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self.gather(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def gather(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), self.dtype.newbyteorder("="))
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        shard_of = np.searchsorted(self.starts, positions, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self.shard(int(shard))[positions[mask] - self.starts[shard]]
        return out

    def shard(self, number: int) -> np.ndarray:
        """Shard `number` as a memory map (a format-1 .npy file is mapped through numpy's own header)."""
        if number not in self._maps:
            shard = self.shards[number]
            path = self.folder / shard.file
            if shard.rows == 0:
                self._maps[number] = np.zeros((0, self.dim), self.dtype)
            elif path.suffix == ".npy":
                self._maps[number] = np.load(path, mmap_mode="r")
            else:
                self._maps[number] = np.memmap(path, dtype=self.dtype, mode="r", shape=(shard.rows, self.dim))
        return self._maps[number]

    def chunks(self, rows: int = COPY_CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Every row in order, `rows` at a time, without holding more than one chunk."""
        for number in range(len(self.shards)):
            mapped = self.shard(number)
            for start in range(0, len(mapped), rows):
                yield np.asarray(mapped[start:start + rows], dtype=self.dtype.newbyteorder("="))


class ShardWriter:
    """Appends vectors to new shards; a run of previous rows that is exactly one previous shard is hard-linked.

    `add` takes freshly embedded rows, `add_previous` the position of a row in the previous version's vectors.
    Previous rows are not gathered at once: a contiguous run is remembered as (start, length) and either linked
    whole or copied in chunks when the run ends, so memory is bounded by a chunk whatever the corpus.
    """

    def __init__(self, folder: Path, prefix: str, dim: int, previous: ShardedVectors | None,
                 shard_rows: int = SHARD_ROWS, dtype: np.dtype = FLOAT32) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.previous = previous
        self.shard_rows = shard_rows
        self.shards: list[Shard] = []
        self.linked: list[Shard] = []  # shards taken whole from the previous version
        self.rows = 0
        self._file = None
        self._open_rows = 0
        self._run_start = 0
        self._run_length = 0

    def add(self, vectors: np.ndarray) -> None:
        self._end_run()
        self._append(np.asarray(vectors, dtype=self.dtype).reshape(-1, self.dim))

    def add_previous(self, position: int) -> None:
        if self._run_length and position == self._run_start + self._run_length:
            self._run_length += 1
        else:
            self._end_run()
            self._run_start, self._run_length = position, 1
        if self._run_is_whole(self._run_start, self._run_length):
            self._end_run()

    def close(self) -> list[Shard]:
        self._end_run()
        self._close_file()
        return self.shards

    def _previous_shard_starting_at(self, position: int) -> int | None:
        number = int(np.searchsorted(self.previous.starts, position))
        return number if number < len(self.previous.shards) and self.previous.starts[number] == position else None

    def _end_run(self) -> None:
        if not self._run_length:
            return
        start, length = self._run_start, self._run_length
        self._run_length = 0
        if self._run_is_whole(start, length):
            self._link(self.previous.shards[self._previous_shard_starting_at(start)])
            return
        for offset in range(0, length, COPY_CHUNK_ROWS):
            count = min(COPY_CHUNK_ROWS, length - offset)
            self._append(self.previous.gather(np.arange(start + offset, start + offset + count)))

    def _run_is_whole(self, start: int, length: int) -> bool:
        """True when a run covers one previous shard exactly and would start a new shard here: link it."""
        if self.previous is None or self._open_rows:
            return False
        number = self._previous_shard_starting_at(start)
        return number is not None and self.previous.shards[number].rows == length

    def _link(self, shard: Shard) -> None:
        os.link(self.previous.folder / shard.file, self.folder / shard.file)
        self.shards.append(shard)
        self.linked.append(shard)
        self.rows += shard.rows

    def _append(self, vectors: np.ndarray) -> None:
        while len(vectors):
            if self._file is None:
                name = f"{self.prefix}-{len(self.shards):05d}{SUFFIXES[self.dtype]}"
                self._file = open(self.folder / name, "wb")  # noqa: SIM115 -- stays open across batches
                self._name = name
            room = self.shard_rows - self._open_rows
            head, vectors = vectors[:room], vectors[room:]
            self._file.write(np.ascontiguousarray(head, dtype=self.dtype).tobytes())
            self._open_rows += len(head)
            self.rows += len(head)
            if self._open_rows == self.shard_rows:
                self._close_file()

    def _close_file(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self.shards.append(Shard(file=self._name, rows=self._open_rows))
        self._file, self._open_rows = None, 0
