"""Options dataclasses by flat name: the keys of a recipe file and the flags of the command line, derived once."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

Options = TypeVar("Options")


@dataclasses.dataclass(frozen=True)
class FlatField:
    """One option of a (nested) options dataclass: where it sits, the type a flag parses, its default."""

    path: tuple[str, ...]  # ("world", "scenes") for the flat name `world_scenes`
    type: type  # the annotation, with None taken out of `X | None`
    default: Any


def flat_fields(options_type: type) -> dict[str, FlatField]:
    """Every option by its flat name, in field order; a nested dataclass's fields get its name as a prefix."""
    flat: dict[str, FlatField] = {}
    hints = typing.get_type_hints(options_type)
    for field in dataclasses.fields(options_type):
        kind = _flag_type(hints[field.name])
        if dataclasses.is_dataclass(kind):
            for name, inner in flat_fields(kind).items():
                flat[f"{field.name}_{name}"] = dataclasses.replace(inner, path=(field.name, *inner.path))
        else:
            flat[field.name] = FlatField((field.name,), kind, field.default)
    return flat


def to_flat(options: object) -> dict[str, Any]:
    """The options as a flat dict: what a recipe file holds, and what a checkpoint records."""
    values = {}
    for name, field in flat_fields(type(options)).items():
        value = options
        for part in field.path:
            value = getattr(value, part)
        values[name] = value
    return values


def from_flat(options_type: type[Options], values: Mapping[str, Any], source: str = "options") -> Options:
    """Options from flat names; a name the options do not have is an error that names `source`."""
    _check_names(options_type, values, source)
    return _nested(options_type, values, "")


def read_recipe(path: Path, options_type: type) -> dict[str, Any]:
    """A recipe file's flat options, checked against `options_type`; a `.json` file it names is found beside it."""
    recipe = json.loads(path.read_text(encoding="utf-8"))
    _check_names(options_type, recipe, str(path))
    model = path.parent / str(recipe.get("model", ""))
    if str(recipe.get("model", "")).endswith(".json") and model.is_file():
        recipe["model"] = str(model)
    return recipe


def add_flags(parser: argparse.ArgumentParser, options_type: type, names: Iterable[str] | None = None,
              helps: Mapping[str, str] | None = None) -> None:
    """A `--flat-name` flag for each option (or for `names`), typed from its annotation; unset flags are None."""
    fields = flat_fields(options_type)
    for name in fields if names is None else names:
        field = fields[name]
        text = (helps or {}).get(name, "" if field.default is dataclasses.MISSING else f"(default {field.default})")
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, type=field.type, default=None, help=text)


def given_flags(args: argparse.Namespace, options_type: type) -> dict[str, Any]:
    """The flat options set on the command line, to lay over a recipe or the defaults."""
    return {name: getattr(args, name) for name in flat_fields(options_type) if getattr(args, name, None) is not None}


def _check_names(options_type: type, names: Iterable[str], source: str) -> None:
    unknown = set(names) - set(flat_fields(options_type))
    if unknown:
        raise ValueError(f"{source}: unknown options {sorted(unknown)}")


def _nested(options_type: type[Options], values: Mapping[str, Any], prefix: str) -> Options:
    hints = typing.get_type_hints(options_type)
    arguments = {}
    for field in dataclasses.fields(options_type):
        kind = _flag_type(hints[field.name])
        if dataclasses.is_dataclass(kind):
            arguments[field.name] = _nested(kind, values, f"{prefix}{field.name}_")
        elif prefix + field.name in values:
            arguments[field.name] = values[prefix + field.name]
    return options_type(**arguments)


def _flag_type(hint: Any) -> Any:
    """`int | None` → int: what a flag parses; a plain type as it is."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return kind
    return hint
