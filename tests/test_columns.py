"""The Ray builder's batch columns: every field of `Work` and `Processed` makes the trip, so none is lost on Ray."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

import numpy as np
import pytest

from clipspace.photos import PhotoFacts
from index_builder.columns import from_columns, to_columns
from index_builder.files import Processed, Work

ARRAYS = {"pixels": ((3, 4, 4), np.float32), "vector": ((5,), np.float32), "tokens": ((2, 3), np.float16)}


def every_field_set() -> Processed:
    """A `Processed` whose every field differs from its default: a new field must be given a value here."""
    values = {"seq": 3, "sha256": "ab" * 32, "size": 1234, "mtime_ns": 1_700_000_000_123_456_789, "width": 120,
              "height": 96, "pixels": np.arange(48, dtype=np.float32).reshape(3, 4, 4),
              "vector": np.linspace(-1, 1, 5, dtype=np.float32), "tokens": np.ones((2, 3), np.float16) / 3,
              "unchanged": True, "reuse_row": 17, "rejected": "not an image",
              "facts": PhotoFacts("HEIF", "2021-07-04T15:30:00+01:00", "exif", "Google", "Pixel 8", 38.7223, -9.1393,
                                  ("Lisbon", "海滩")),
              "ocr_text": "CAFÉ 咖啡\nopen 7-19", "text_read": True, "layout": "QUJD" * 64}
    assert set(values) == {field.name for field in fields(Processed)}, "give the new field of Processed a value"
    for field in fields(Processed):
        assert field.default is MISSING or values[field.name] is not field.default, field.name
    return Processed(**values)


def assert_same(got: Processed, expected: Processed) -> None:
    for field in fields(Processed):
        mine, theirs = getattr(got, field.name), getattr(expected, field.name)
        if isinstance(theirs, np.ndarray):
            np.testing.assert_array_equal(mine, theirs, err_msg=field.name)
            assert mine.dtype == theirs.dtype, field.name
        else:
            assert mine == theirs and type(mine) is type(theirs), field.name


def test_every_field_of_processed_survives_the_columns_of_a_ray_batch():
    found = every_field_set()
    (back,) = from_columns(to_columns([found], Processed, ARRAYS), Processed)
    assert_same(back, found)


def test_fields_that_are_none_come_back_none_beside_rows_that_hold_them():
    rows = [Processed(7, rejected="too big"), every_field_set()]
    back = from_columns(to_columns(rows, Processed, ARRAYS), Processed)
    assert_same(back[0], rows[0])
    assert_same(back[1], rows[1])


def test_an_array_field_without_a_column_shape_is_refused_rather_than_dropped():
    with pytest.raises(ValueError, match=r"Processed\.tokens"):
        to_columns([every_field_set()], Processed, {"pixels": ARRAYS["pixels"], "vector": ARRAYS["vector"]})


def test_work_survives_the_columns_of_a_parquet_file():
    rows = [Work(0, "a/ünï.jpg", None), Work(1, "b.png", "cd" * 32)]
    assert from_columns(to_columns(rows, Work), Work) == rows


def test_a_field_of_a_type_with_no_column_is_refused():
    @dataclass
    class WithMetadata:
        seq: int
        exif: dict | None = None

    with pytest.raises(TypeError, match=r"WithMetadata\.exif"):
        to_columns([WithMetadata(0)], WithMetadata)
