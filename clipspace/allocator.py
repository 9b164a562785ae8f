"""The C heap's two policies this project needs: give freed memory back (a service) or keep it (training).

Both talk to glibc's malloc through `ctypes`; on another C library (musl, macOS) they do nothing, and everything
still works, only with the allocator's own defaults.
"""

from __future__ import annotations

import ctypes
import functools
import sys

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_LARGEST_INT = 2**31 - 1  # mallopt takes a C int


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's own C library, if it is glibc (the one with malloc_trim and mallopt)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system now.

    A model is built and fingerprinted in fp32, then cast: the fp32 weights freed by the cast stay in glibc's
    heaps, fragmented between live allocations, so a bf16 ViT-B-32 kept ~90 MB it no longer used in its
    resident memory until `malloc_trim` hands those pages back (docs/decisions.md, "Where the service's
    memory goes").
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_freed_memory() -> None:
    """From now on, keep freed memory in the process for the next allocation instead of returning it.

    A training step allocates and frees the same large activations every time. By default glibc serves a block
    above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it when freed, and trims its heap's
    free top, so every step faults in and zeroes those pages anew: at 96 px, 7.6 M page faults in a 2-minute
    run. Without mmap and trimming, the heap grows to the step's peak once and is reused: 1.2 M faults, system
    time 18 → 7 s, 5% less wall time (docs/decisions.md, issue 7). The cost, a resident set that stays at its
    peak, is what a training process wants anyway.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _LARGEST_INT)
