"""One OpenMP team per process: torch's parallel work runs on the model thread, every other thread runs serially.

GNU OpenMP gives each thread that starts a parallel region its own team of worker threads. Once the process holds
more such threads than there are cores, libgomp stops letting idle workers spin and puts them to sleep after every
region, so each of the hundreds of small operations in a forward pass pays a futex wake-up. Measured here
(ViT-B-32 bf16, one 7-token text, 2 cores): 6.5 ms while only the model thread had used torch, 13.2 ms once two
decode threads had preprocessed an image each (ToTensor and Normalize run parallel regions on large tensors), and
6.9 ms when those threads were made serial with `serial_torch_here` (docs/decisions.md, "The service as fast as its
encoder"). The service therefore loads and runs the model on one thread, and decode threads call `serial_torch_here`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading

import torch  # loads torch's OpenMP runtime, the one `_torch_openmp` finds by its soname

log = logging.getLogger(__name__)

_serial = threading.local()


@functools.cache
def _torch_openmp() -> ctypes.CDLL | None:
    """torch's GNU OpenMP runtime (already loaded by torch); None where torch uses another threading runtime."""
    try:
        runtime = ctypes.CDLL("libgomp.so.1")
        runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
        return runtime
    except (OSError, AttributeError):
        log.info("torch's OpenMP runtime is not GNU libgomp here: decode threads keep torch's thread count")
        return None


def serial_torch_here() -> None:
    """Make torch's operations on the calling thread run on it alone (OpenMP's per-thread setting; other threads,
    the model thread included, keep theirs). Cheap after the first call on a thread."""
    if getattr(_serial, "done", False):
        return
    runtime = _torch_openmp()
    if runtime is not None:
        torch.get_num_threads()  # torch sets each thread's count on first use: let it, then override it here
        runtime.omp_set_num_threads(1)
    _serial.done = True
