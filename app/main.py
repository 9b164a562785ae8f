"""`uvicorn app.main:app`: the service configured from CLIPSPACE_* environment variables."""

import logging
import os

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning, so between the model's
# operations they leave the cores to the event loop and the search threads (measured in docs/decisions.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.factory import create_app

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for _name in ("clipspace", "app"):
    logging.getLogger(_name).setLevel(logging.INFO)

app = create_app()
