"""`uvicorn app.main:app`: the service configured from CLIPSPACE_* environment variables."""

import logging
import os
import sys

# torchvision's ops import torch._dynamo, which imports triton (GPU kernels for torch.compile): ~76 MB resident
# that a CPU service never runs. Marked absent before torch is imported, torch treats it as not installed.
if os.environ.get("CLIPSPACE_DEVICE", "cpu") == "cpu":
    sys.modules.setdefault("triton", None)

from app.factory import create_app  # after the triton line above, which must come before torch

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for _name in ("clipspace", "app"):
    logging.getLogger(_name).setLevel(logging.INFO)

app = create_app()
