"""Read-your-writes across routers: before a router answers NOT_FOUND from its snapshot, it makes sure the
snapshot is not merely behind etcd.

A collection created (or an alias set) through router A is committed in etcd when A answers; router B learns
of it from its watch a few milliseconds later. A caller that creates through A and then writes through B
would get NOT_FOUND in that window. So on a miss B reads the revision of the newest record under its root (one
linearizable read) and waits, briefly, for its watcher to reach it, then looks again. (Not etcd's own
revision: writes outside the root, which no snapshot of it reaches, would make every miss wait in full.)

Misses are cheap to cause (any typo), so the reads are single-flight: at most one runs at a time, and a miss
joins a read that started after the miss did (an earlier read might predate the write the caller saw).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from quiver.control_plane.watcher import ClusterWatcher

_log = logging.getLogger(__name__)


class SnapshotCatchUp:
    def __init__(self, watcher: ClusterWatcher, read_revision: Callable[[], Awaitable[int]], *, max_wait_s: float = 1.0):
        self._watcher = watcher
        self._read_revision = read_revision
        self._max_wait_s = max_wait_s
        self._probe: asyncio.Task[int] | None = None
        self._probe_started = 0.0

    async def catch_up(self, budget_s: float | None = None) -> bool:
        """Wait until the watcher's snapshot is at least as new as etcd was when this call began; True when
        it is (or already was) newer than before the call, False when nothing changed or etcd could not say."""
        began = time.monotonic()
        before = self._watcher.current.revision
        wait = self._max_wait_s if budget_s is None else max(0.0, min(self._max_wait_s, budget_s / 2))  # time left to answer
        try:
            async with asyncio.timeout(wait):
                revision = await self._etcd_revision(began)
                if revision <= before:
                    return False
                await self._watcher.wait_for(lambda s: s.revision >= revision, timeout=wait)
        except (TimeoutError, asyncio.TimeoutError):
            _log.info("router snapshot at revision %d did not catch up with etcd within %.2fs", self._watcher.current.revision, wait)
        except Exception as exc:  # noqa: BLE001 - etcd unreachable: answer from the snapshot, as before
            _log.info("cannot read etcd's revision to check a miss: %s", exc)
        return self._watcher.current.revision > before

    async def _etcd_revision(self, began: float) -> int:
        while True:
            probe = self._probe
            if probe is not None and not probe.done():
                if self._probe_started >= began:
                    return await asyncio.shield(probe)
                await asyncio.wait([probe])  # it may predate the caller's write: wait for it, then read anew
                continue
            self._probe_started = time.monotonic()
            self._probe = asyncio.create_task(self._read_revision())
            self._probe.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if no waiter is left
            return await asyncio.shield(self._probe)
