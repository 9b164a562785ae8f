"""The real service (`app.main:app`) with one fault a test can trigger: the model raises in its batch thread.

When the file named by CLIPSPACE_TEST_FAULT_FILE exists, the next forward pass of a transformer in the model
raises RuntimeError, as a failing kernel or an exhausted allocator would, and removes the file, so exactly one
batch fails. The fault is injected through torch's public global forward pre-hook: no code of ours is replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from open_clip.transformer import Transformer

from app.main import app

__all__ = ["app"]

FAULT_FILE = Path(os.environ["CLIPSPACE_TEST_FAULT_FILE"])


def _fail_once(module: torch.nn.Module, _inputs: tuple) -> None:
    if isinstance(module, Transformer) and FAULT_FILE.exists():
        FAULT_FILE.unlink()
        raise RuntimeError("injected fault: the forward pass failed")


torch.nn.modules.module.register_module_forward_pre_hook(_fail_once)
