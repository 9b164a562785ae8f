"""The core is layered one way: the shared space ← index versions ← fusion; only the entry points see all three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "clipspace"
SPACE = ["errors.py", "settings.py", "images.py", "encoder.py", "identity.py", "options.py", "allocator.py",
         "openmp.py", "packaged_towers.py", "align"]
INDEX = ["store.py", "manifest.py", "shards.py", "thumbnails.py", "index"]
FUSION, ENTRY_POINTS = ["fusion"], ["cli.py", "align/__main__.py"]


def modules(names: list[str]) -> list[Path]:
    paths = [path for name in names for path in ([CORE / name] if name.endswith(".py") else
                                                  sorted((CORE / name).rglob("*.py")))]
    entry_points = {CORE / name for name in ENTRY_POINTS}
    return [path for path in paths if path.is_file() and path not in entry_points]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return names


def dotted(names: list[str]) -> tuple[str, ...]:
    return tuple("clipspace." + name.removesuffix(".py").replace("/", ".") for name in names + ENTRY_POINTS)


@pytest.mark.parametrize(("layer", "above"), [(SPACE, INDEX + FUSION), (INDEX, FUSION)], ids=["space", "index"])
def test_no_core_module_imports_a_layer_above_its_own(layer: list[str], above: list[str]) -> None:
    forbidden = dotted(above)
    wrong = {path.relative_to(CORE).as_posix(): sorted(name for name in imported(path)
                                                       if name.startswith(forbidden))
             for path in modules(layer)}
    assert wrong
    assert {path: names for path, names in wrong.items() if names} == {}
