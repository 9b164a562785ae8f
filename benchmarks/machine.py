"""What the numbers were measured on: CPU, cores, threads, library versions and how busy the machine was."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import faiss
import open_clip
import torch

from clipspace.encoder import cpu_has_fast_bf16


def describe_machine() -> dict:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "native_bf16": cpu_has_fast_bf16(),
        "load_avg_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "open_clip": open_clip.__version__,
    }


def load_average() -> list[float]:
    """1/5/15-minute load: above the core count at start or end, the run shared its CPUs and is not a baseline."""
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
