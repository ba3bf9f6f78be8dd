"""Freed C-heap memory goes back to the OS when the shard asks (after IVF-PQ training)."""

import gc
import os
import platform

import numpy as np
import pytest

from loadtest.bench_memory import memory_of
from shard.heap_release import release_free_heap


def _rss_anon() -> int:
    return memory_of(os.getpid())["RssAnon"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_in_the_middle_of_the_heap_is_returned_to_the_os():
    # 64 KiB blocks sit below glibc's mmap threshold, so they come from the heap; keeping every 50th one
    # pins the heap's top, so only a trim of its middle can give the rest back.
    blocks = [np.ones(8192, dtype=np.float64) for _ in range(3000)]  # 192 MiB, touched
    kept = blocks[::50]
    del blocks
    gc.collect()
    before = _rss_anon()
    assert release_free_heap() is True
    released = before - _rss_anon()
    assert released > 100 * 2**20, f"only {released / 2**20:.0f} MiB returned"
    assert all(float(b[0]) == 1.0 for b in kept)  # what is still in use is untouched
