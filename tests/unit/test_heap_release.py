"""Freed C-heap memory goes back to the OS when the shard asks (after IVF-PQ training), and multi-MiB
transients freed after a larger one still do with the shard's fixed mmap threshold."""

import gc
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from loadtest.bench_memory import memory_of
from shard.config import ShardConfig
from shard.heap_release import release_free_heap
from shard.server import ShardServer


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


_TRANSIENT_AFTER_A_LARGER_ONE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from loadtest.bench_memory import memory_of
    from shard.heap_release import fix_mmap_threshold

    def anon():
        return memory_of(os.getpid())["RssAnon"]

    if sys.argv[1] != "0":
        assert fix_mmap_threshold(int(sys.argv[1]))
    larger = np.ones(30 * 2**17)  # 30 MiB: under glibc's default, freeing it raises the threshold to 30 MiB
    del larger
    transient = np.ones(8 * 2**17)  # 8 MiB, touched: a batch's vectors, a snapshot buffer
    pinned = np.ones(100)  # something small allocated after it
    before = anon()
    del transient
    print(before - anon())
""")


def _returned_on_free(threshold_bytes: int) -> int:
    # In a child: the threshold is per process, and the test process's history would decide the outcome.
    done = subprocess.run([sys.executable, "-c", _TRANSIENT_AFTER_A_LARGER_ONE, str(threshold_bytes)], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's M_MMAP_THRESHOLD is glibc's")
def test_with_the_shards_fixed_threshold_a_freed_multi_mib_transient_goes_back_to_the_os():
    assert _returned_on_free(0) < 2**20  # glibc's dynamic threshold: the 8 MiB stay resident, freed
    assert _returned_on_free(4 * 2**20) >= 7 * 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's M_MMAP_THRESHOLD is glibc's")
async def test_a_shard_server_fixes_the_threshold_it_is_configured_with_when_it_starts(tmp_path, monkeypatch):
    import shard.server as server_module

    asked: list[int] = []
    monkeypatch.setattr(server_module, "fix_mmap_threshold", lambda threshold: asked.append(threshold) or True)
    server = ShardServer(ShardConfig(data_dir=tmp_path, port=0, malloc_mmap_threshold_bytes=3 * 2**20))
    await server.start()
    try:
        assert asked == [3 * 2**20]
    finally:
        await server.stop(0)
