"""Only the model's thread runs torch in parallel: other threads are made serial, without touching the model's;
FAISS searches run on threads of their own, one OpenMP thread each."""

from __future__ import annotations

import threading

import faiss
import torch

from app.served_index import search_executor
from clipspace.openmp import serial_torch_here


def threads_seen_by(work) -> int:
    seen = []

    def run() -> None:
        work()
        torch.ones(1 << 20).mul(2)  # a parallel-sized operation: torch has set the thread up by now
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


def test_a_serial_thread_runs_torch_alone_and_leaves_other_threads_their_count():
    before = torch.get_num_threads()
    assert threads_seen_by(serial_torch_here) == 1
    assert threads_seen_by(lambda: None) == before
    assert torch.get_num_threads() == before


def test_making_a_thread_serial_twice_is_harmless():
    assert threads_seen_by(lambda: (serial_torch_here(), serial_torch_here())) == 1


def test_searches_run_with_one_faiss_thread_whatever_the_main_thread_uses():
    faiss.omp_set_num_threads(2)  # the main thread's count must not leak into the search threads
    with search_executor() as searching:
        counts = {searching.submit(faiss.omp_get_max_threads).result() for _ in range(8)}
    assert counts == {1}
