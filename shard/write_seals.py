"""Partitions sealed against writes, and the writes in progress on each.

A cutover from index version v to v+1 seals v's primaries: from then on they refuse writes (UNAVAILABLE,
nothing applied), so the reindex can copy v's last writes into v+1 before routers switch to it, and no write
acknowledged by v is missing from v+1. `drained` waits for the writes that passed the check before the seal
was set, so the log position read after it covers every write v acknowledged.

A seal lives in memory only, and lapses by itself after its time to live: a server that restarts comes back
unsealed, and a router that dies between sealing and switching never leaves v refusing writes for good. That
is safe for a cutover because routers stop writing to v once the cutover's transaction is in their watch (well
within the time to live), and the reindex seals again (and checks the LSN it drained to) if a cutover is retried.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from quiver.errors import DeadlineExceeded, SealedAgainstWrites
from quiver.specs import PartitionKey

_POLL_S = 0.002
DEFAULT_TTL_S = 30.0


class WriteSeals:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reasons: dict[PartitionKey, tuple[str, float]] = {}  # key -> (reason, lapses at)
        self._in_progress: dict[PartitionKey, int] = {}

    def seal(self, key: PartitionKey, reason: str, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._reasons[key] = (reason, self._clock() + ttl_s)

    def lift(self, key: PartitionKey) -> None:
        self._reasons.pop(key, None)

    def sealed(self, key: PartitionKey) -> bool:
        return self._reason(key) is not None

    def _reason(self, key: PartitionKey) -> str | None:
        found = self._reasons.get(key)
        if found is None:
            return None
        if self._clock() >= found[1]:
            del self._reasons[key]  # lapsed: whoever set it did not finish (or lift it) in time
            return None
        return found[0]

    @contextlib.contextmanager
    def writing(self, key: PartitionKey, past_seal: bool = False) -> Iterator[None]:
        """Around one write: refused if the partition is sealed (unless it is a reindex's own copy,
        `past_seal`), else counted until it ends."""
        reason = self._reason(key)
        if reason is not None and not past_seal:
            raise SealedAgainstWrites(f"partition {key} is sealed against writes: {reason}; nothing was applied; retry in a moment")
        self._in_progress[key] = self._in_progress.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._in_progress[key] - 1
            if left:
                self._in_progress[key] = left
            else:
                del self._in_progress[key]

    async def drained(self, key: PartitionKey, deadline: float | None) -> None:
        """Once no write that passed the seal check is still in progress on `key`."""
        while self._in_progress.get(key):
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"partition {key}: writes begun before the seal were still in progress at the deadline")
            await asyncio.sleep(_POLL_S)
