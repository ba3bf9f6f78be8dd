"""Give the C heap's free pages back to the OS: after a large transient allocation, and as policy.

IVF-PQ training (k-means and PQ residuals over the sample, encoding the buffered points) allocates hundreds
of MiB in faiss and numpy and frees them again; glibc keeps what was freed in the middle of its arenas (one
per thread that allocated), so a shard's resident memory kept 100-300 MiB of nothing after training, by more
or less depending on how the training overlapped the ingest. malloc_trim returns every whole free page of
every arena. It costs milliseconds and runs only after training.

The second cause is glibc's dynamic mmap threshold: an allocation above the threshold gets its own mapping,
returned to the OS when freed, but each such free raises the threshold to that size (up to 32 MiB), so a
shard's later multi-MiB transients (a 5,000-point batch's vectors and codes, snapshot buffers, filter masks)
come from the arenas and stay resident as fragments after they are freed. A fixed threshold
(`fix_mmap_threshold`, mallopt M_MMAP_THRESHOLD, which also turns the dynamic one off) keeps them mapped:
a served IVF-PQ shard of 1M points grew 324 MiB of anonymous memory with glibc's default, 229 MiB with a
fixed 4 MiB threshold, 238 MiB with 16 MiB (2 cores, synthetic 128-d, ids and 3 metadata fields).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Allocations of at least `threshold_bytes` get their own mapping, whatever was freed before; whether
    it took effect (False where the C library is not glibc, or for 0, which leaves glibc's default)."""
    libc = _glibc()
    if libc is None or threshold_bytes <= 0:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)))
    if not ok:
        _log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused; glibc's dynamic threshold stays", threshold_bytes)
    return ok


def release_free_heap() -> bool:
    """malloc_trim(0) where the C library is glibc; whether it gave memory back (False elsewhere)."""
    libc = _glibc()
    if libc is None:
        return False
    with _lock:  # one trim at a time: a second one in parallel would only walk the same arenas again
        try:
            return bool(libc.malloc_trim(0))
        except Exception:  # noqa: BLE001 - freeing is an optimisation, never a reason to fail the step
            _log.exception("malloc_trim failed")
            return False
