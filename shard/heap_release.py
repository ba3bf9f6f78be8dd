"""Give the C heap's free pages back to the OS after a large transient allocation.

IVF-PQ training (k-means and PQ residuals over the sample, encoding the buffered points) allocates hundreds
of MiB in faiss and numpy and frees them again; glibc keeps what was freed in the middle of its arenas (one
per thread that allocated), so a shard's resident memory kept 100-300 MiB of nothing after training, by more
or less depending on how the training overlapped the ingest. malloc_trim returns every whole free page of
every arena. It costs milliseconds and runs only after training.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading

_log = logging.getLogger(__name__)
_lock = threading.Lock()


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


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
