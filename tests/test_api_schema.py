"""The API keeps its own OpenAPI document: property-based requests over every route, read from the live service.

schemathesis generates valid and invalid requests from /openapi.json as the running service publishes it, so
a route added later is covered without touching this file. Every answer must be documented (status, content
type, body schema) and none may be a 5xx.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.keys import add_key
from tests.conftest import build, running_service, write_corpus

# Per operation and generation mode: enough to find an undocumented answer, small enough that the whole run
# stays well under two minutes on two cores. The seed makes a failure reproducible.
EXAMPLES_PER_OPERATION = 100
SEED = 20261128
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module", params=["anonymous", "keyed"])
def service(request, tmp_path_factory, tiny_encoder):
    """The service as it runs without keys, and with them (its schema then documents the bearer key and the 401,
    and schemathesis sends the key; its `ignored_auth` check also sends requests without one)."""
    root = tmp_path_factory.mktemp("schema")
    write_corpus(root / "images", ["a.jpg", "b.png", "c.jpg"])
    (root / "images" / "a.txt").write_text("a red circle", encoding="utf-8")
    build(root / "images", root / "index", tiny_encoder)
    keys = {"api_keys_file": root / "keys.txt"} if request.param == "keyed" else {}
    key = add_key(root / "keys.txt") if keys else None
    with running_service(index_dir=root / "index", **keys) as service:
        service.headers = ["--header", f"Authorization: Bearer {key}"] if keys else []
        service.wait_until(lambda: service.client.get("/readyz").status_code == 200, timeout=120)
        yield service


def test_every_route_answers_as_its_schema_documents_and_never_5xx(service, tmp_path):
    run = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{service.url}/openapi.json", "--checks", "all",
         *service.headers,
         "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED), "--workers", "1",
         "--generation-database", "none", "--no-color", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache folder goes there too
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    assert service.process.poll() is None
