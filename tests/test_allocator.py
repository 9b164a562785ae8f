"""The C heap's policies (clipspace.allocator), observed through the page faults a process takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clipspace import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the policies only exist with glibc's malloc")

# Allocates, writes and frees a 64 MB block with the C library's own malloc (above glibc's largest mmap
# threshold, like a 96 px training batch's activations), round after round, before and after
# `keep_freed_memory`, and prints the page faults of each round. (Through torch the same holds once the heap has
# grown around Python's own allocations, after a varying number of rounds.)
_ROUNDS = """
import ctypes
import json
import resource
from clipspace import allocator

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 * 2**20)
    libc.memset(block, 1, 64 * 2**20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

returned = [faults() for _ in range(5)]
allocator.keep_freed_memory()
faults()  # the heap grows to hold the block once
print(json.dumps([returned, [faults() for _ in range(5)]]))
"""


def test_kept_memory_is_reused_without_faulting_its_pages_in_again() -> None:
    # in a child process: the policy is process-wide and cannot be undone
    done = subprocess.run([sys.executable, "-c", _ROUNDS], capture_output=True, text=True, timeout=120, check=True)
    returned, kept = json.loads(done.stdout)
    pages = 64 * 2**20 // 4096
    assert min(returned) >= pages * 0.9, f"by default a freed block goes back and faults in anew: {returned}"
    assert max(kept) < pages * 0.1, f"kept memory should be reused, yet the rounds took {kept} faults"


# Fills the heap with 2,000 blocks of 100 kB (below the mmap threshold), frees every other one, and prints the
# resident set before and after `return_freed_memory`: the freed holes stay resident until they are returned.
_HOLES = """
import os
import torch
from clipspace import allocator

def resident():
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

blocks = [torch.ones(25_000) for _ in range(2_000)]
del blocks[::2]
before = resident()
allocator.return_freed_memory()
print(before, resident())
"""


def test_returned_memory_leaves_the_resident_set() -> None:
    done = subprocess.run([sys.executable, "-c", _HOLES], capture_output=True, text=True, timeout=120, check=True)
    before, after = map(int, done.stdout.split())
    assert before - after > 60 * 2**20, f"trimming freed only {(before - after) / 2**20:.0f} MB of 100 MB of holes"
