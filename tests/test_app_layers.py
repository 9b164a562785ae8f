"""The service's modules import one way: no cycle inside app/, and the metrics a leaf that is told things."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def app_imports() -> dict[str, set[str]]:
    """For every module of app/, the modules of app/ it imports (anywhere in it, but not for type checking)."""
    graph = {}
    for path in sorted((ROOT / "app").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("app")}
        graph[name] = found
    return {name: {module for module in found if module in graph and module != name}
            for name, found in graph.items()}


def test_the_service_modules_import_each_other_without_a_cycle():
    try:
        order = list(TopologicalSorter(app_imports()).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle in app/: {' -> '.join(error.args[1])}") from None
    assert order.index("app.metrics") < order.index("app.batching") < order.index("app.serving")


def test_metrics_import_nothing_of_the_service_or_the_libraries_they_describe():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.metrics; print(' '.join(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in loaded if name.split(".")[0] in {"app", "torch", "faiss", "open_clip"}] == [
        "app", "app.metrics"]
