"""Search filters: which items a search may answer, as one SQL condition over meta.sqlite's records.

The condition selects rows; the search then runs inside that selection (clipspace.index.filtered), never as a
cut after an unfiltered top k. Every field narrows the selection (AND); a list field matches any of its values.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, fields
from datetime import date, datetime

from clipspace.errors import InvalidFilter

EARTH_RADIUS_KM = 6371.0088
# Pillow's names for the formats the loader reads, and the names people also use for them.
FORMATS = {"JPEG": "JPEG", "JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF",
           "TIF": "TIFF", "HEIF": "HEIF", "HEIC": "HEIF", "AVIF": "AVIF"}


@dataclass(frozen=True)
class Near:
    """Within `km` of a point (great-circle distance)."""

    lat: float
    lon: float
    km: float


@dataclass(frozen=True)
class SearchFilter:
    """What the API's `filter` object holds; None (or empty) fields do not filter."""

    path_prefix: str | None = None  # a folder relative to the corpus root: that folder and everything under it
    # (leading and trailing slashes do not matter; a prefix that climbs out with `..` matches nothing)
    taken_after: str | None = None  # ISO 8601 date or date-time, inclusive; compared with the capture time's
    taken_before: str | None = None  # wall clock (its first 19 characters: see clipspace.photos)
    camera: str | None = None  # case-insensitive substring of "make model"
    near: Near | None = None
    tags: tuple[str, ...] = ()  # any of them, case-insensitive
    formats: tuple[str, ...] = ()  # any of them: JPEG, PNG, HEIF... (jpg, heic and tif are understood)
    min_width: int | None = None
    min_height: int | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, field.name) in (None, ()) for field in fields(self))


def where(search_filter: SearchFilter) -> tuple[str, list]:
    """The SQL condition over `items` (or a view with its columns) and its parameters; checks every field first."""
    clauses: list[str] = []
    parameters: list = []

    def add(clause: str, *values: object) -> None:
        clauses.append(clause)
        parameters.extend(values)

    if search_filter.path_prefix is not None:
        parts = [part for part in search_filter.path_prefix.replace("\\", "/").split("/") if part not in ("", ".")]
        if ".." in parts:
            add("0")
        elif parts:
            add("path LIKE ? ESCAPE '\\'", _like_escaped("/".join(parts)) + "/%")
    if search_filter.taken_after is not None:
        add("substr(taken_at, 1, 19) >= ?", _wall_clock(search_filter.taken_after, "taken_after", end=False))
    if search_filter.taken_before is not None:
        add("substr(taken_at, 1, 19) <= ?", _wall_clock(search_filter.taken_before, "taken_before", end=True))
    if search_filter.camera is not None:
        add("fold(coalesce(camera_make, '') || ' ' || coalesce(camera_model, '')) LIKE ? ESCAPE '\\'",
            f"%{_like_escaped(search_filter.camera.casefold())}%")
    if search_filter.near is not None:
        near = _checked_near(search_filter.near)
        add("lat IS NOT NULL AND distance_km(lat, lon, ?, ?) <= ?", near.lat, near.lon, near.km)
    if search_filter.tags:
        tags = [tag.casefold() for tag in search_filter.tags]
        add(f"EXISTS (SELECT 1 FROM json_each(items.tags) WHERE fold(value) IN ({', '.join('?' * len(tags))}))", *tags)
    if search_filter.formats:
        names = sorted({_format(name) for name in search_filter.formats})
        add(f"format IN ({', '.join('?' * len(names))})", *names)
    for name in ("min_width", "min_height"):
        value = getattr(search_filter, name)
        if value is not None:
            add(f"{name.removeprefix('min_')} >= ?", value)
    return " AND ".join(clauses) or "1", parameters


def register_functions(db: sqlite3.Connection) -> None:
    """The SQL functions `where` uses: Unicode case folding (SQLite's own folds ASCII only) and distances."""
    db.create_function("fold", 1, lambda text: None if text is None else str(text).casefold(), deterministic=True)
    db.create_function("distance_km", 4, distance_km, deterministic=True)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) on a sphere of the Earth's mean radius."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wall_clock(text: str, name: str, *, end: bool) -> str:
    """An ISO date or date-time as the 19-character wall clock a capture time starts with; a date covers its day
    (the start of it for `taken_after`, the end for `taken_before`). An offset, if given, is not converted:
    capture times are compared on the clock the photographer saw."""
    try:
        if len(text) <= 10:
            day = date.fromisoformat(text)
            return f"{day.isoformat()}T{'23:59:59' if end else '00:00:00'}"
        return datetime.fromisoformat(text).replace(tzinfo=None).isoformat(timespec="seconds")
    except ValueError:
        raise InvalidFilter(f"{name} must be an ISO 8601 date or date-time (2019-07-04, 2019-07-04T15:30), "
                            f"not {text!r}") from None


def _checked_near(near: Near) -> Near:
    if not (-90 <= near.lat <= 90 and -180 <= near.lon <= 180):
        raise InvalidFilter(f"near: lat must lie in -90..90 and lon in -180..180, not {near.lat}, {near.lon}")
    if not (0 < near.km <= math.pi * EARTH_RADIUS_KM):
        raise InvalidFilter(f"near: km must be above 0 and at most half the Earth's circumference, not {near.km}")
    return near


def _format(name: str) -> str:
    try:
        return FORMATS[name.strip().upper()]
    except KeyError:
        raise InvalidFilter(f"unknown format {name!r}; formats are {', '.join(sorted(set(FORMATS.values())))}"
                            ) from None
