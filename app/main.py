"""`uvicorn app.main:app`: the service configured from CLIPSPACE_* environment variables."""

import logging

from app.factory import create_app

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for _name in ("clipspace", "app"):
    logging.getLogger(_name).setLevel(logging.INFO)

app = create_app()
