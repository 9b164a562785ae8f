"""The metrics are a leaf that is told things (no cycle anywhere is `make lint`'s import-linter contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_import_nothing_of_the_service_or_the_libraries_they_describe():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.metrics; print(' '.join(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in loaded if name.split(".")[0] in {"app", "torch", "faiss", "open_clip"}] == [
        "app", "app.metrics"]
