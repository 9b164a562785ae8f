"""Plain dataclasses as the numpy columns of a batch and back, derived from their fields: the Ray builder's rows.

A field that may be None travels with a `has_<field>` mask beside it; an array field travels only when its shape
is given, and one left out must be None in every row; a field that is itself a frozen dataclass of plain values
(the photo's metadata) travels as JSON text. A field of a type with no column is refused, so a field
added to `Work` or `Processed` either reaches the Ray builder's driver or fails loudly; it is never dropped.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, NamedTuple, TypeVar

import numpy as np

Row = TypeVar("Row")
ArrayShapes = Mapping[str, tuple[tuple[int, ...], type]]  # an array field's name -> (shape of one row, dtype)
_SCALARS: dict[type, type] = {int: np.int64, bool: np.bool_, str: object}


class _Field(NamedTuple):
    name: str
    kind: type  # int, bool, str, np.ndarray or a dataclass
    optional: bool


def to_columns(rows: Sequence[Any], kind: type, arrays: ArrayShapes | None = None) -> dict[str, np.ndarray]:
    """`rows`, instances of the dataclass `kind`, as one column per field; `arrays` shapes its array fields."""
    arrays = arrays or {}
    batch: dict[str, np.ndarray] = {}
    for field in _fields(kind):
        values = [getattr(row, field.name) for row in rows]
        if field.kind is np.ndarray:
            if field.name not in arrays:
                if any(value is not None for value in values):
                    raise ValueError(f"{kind.__name__}.{field.name} holds arrays, but no column shape was given")
                continue
            shape, dtype = arrays[field.name]
            batch[field.name] = np.zeros((len(values), *shape), dtype)
            for index, value in enumerate(values):
                if value is not None:
                    batch[field.name][index] = value
        elif dataclasses.is_dataclass(field.kind):
            batch[field.name] = np.array([None if value is None else json.dumps(dataclasses.asdict(value))
                                          for value in values], object)
        else:
            empty = field.kind()
            batch[field.name] = np.array([empty if value is None else value for value in values],
                                         _SCALARS[field.kind])
        if field.optional:
            batch[f"has_{field.name}"] = np.array([value is not None for value in values], bool)
    return batch


def from_columns(batch: Mapping[str, np.ndarray], kind: type[Row]) -> list[Row]:
    """The rows of `batch` as instances of the dataclass `kind`; an array field without a column is None."""
    fields = _fields(kind)
    rows = []
    for index in range(len(next(iter(batch.values()), ()))):
        values: dict[str, Any] = {}
        for field in fields:
            absent = field.kind is np.ndarray and field.name not in batch
            if absent or (field.optional and not batch[f"has_{field.name}"][index]):
                values[field.name] = None
            elif field.kind is np.ndarray:
                values[field.name] = batch[field.name][index]
            elif dataclasses.is_dataclass(field.kind):
                values[field.name] = _from_json(field.kind, batch[field.name][index])
            else:
                values[field.name] = field.kind(batch[field.name][index])
        rows.append(kind(**values))
    return rows


@cache
def _fields(kind: type) -> tuple[_Field, ...]:
    """Each field of `kind` with its column type, from its annotation (`int`, `str | None`, `np.ndarray | None`)."""
    hints = typing.get_type_hints(kind)
    found = []
    for field in dataclasses.fields(kind):
        hint = hints[field.name]
        parts = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
        kinds = [part for part in parts if part is not type(None)]
        if len(kinds) != 1 or not (kinds[0] in (*_SCALARS, np.ndarray) or dataclasses.is_dataclass(kinds[0])):
            raise TypeError(f"{kind.__name__}.{field.name}: a {hint} has no batch column (index_builder.columns "
                            "carries int, bool, str, np.ndarray and dataclasses, each optionally None)")
        found.append(_Field(field.name, kinds[0], len(kinds) < len(parts)))
    return tuple(found)


def _from_json(kind: type, text: str) -> Any:
    """A dataclass of plain values back from its JSON text; its tuple fields (JSON lists) become tuples again."""
    values = json.loads(text)
    hints = typing.get_type_hints(kind)
    return kind(**{name: tuple(value) if typing.get_origin(hints[name]) is tuple else value
                   for name, value in values.items()})
