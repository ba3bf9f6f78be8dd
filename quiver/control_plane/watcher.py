"""ClusterWatcher: an always-available, eventually-current ClusterSnapshot for the router to serve from.

It loads one snapshot, then watches the root prefix from the next revision and, on any change, re-reads the
whole snapshot. The state is small (collections, shard maps, servers), so a full re-read is cheap and can
never drift the way incremental patching can. While etcd is unreachable `current` keeps the last snapshot;
the watch reconnects with backoff (capped at `max_backoff`) and resumes where it left off, so no change is
missed.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable

from quiver.control_plane.store import ClusterSnapshot, ClusterStore
from quiver.errors import QuiverError
from quiver.metrics import CLUSTER_REVISION, WATCH_APPLY_SECONDS

_log = logging.getLogger(__name__)

OnChange = Callable[[ClusterSnapshot], object]  # may return an awaitable, which is awaited


class ClusterWatcher:
    def __init__(self, store: ClusterStore, *, on_change: OnChange | None = None, max_backoff: float = 2.0):
        self._store = store
        self._on_change = on_change
        self._max_backoff = max_backoff
        self._current: ClusterSnapshot | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> ClusterSnapshot:
        if self._current is None:
            raise RuntimeError("ClusterWatcher.start() has not finished yet")
        return self._current

    async def start(self) -> None:
        """Load the first snapshot (Unavailable if etcd cannot be read now) and start watching."""
        if self._task is not None:
            return
        self._current = await self._store.snapshot()
        self._task = asyncio.create_task(self._run(), name=f"quiver-cluster-watcher {self._store.keys.root}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for(
        self, predicate: Callable[[ClusterSnapshot], bool], timeout: float = 10.0
    ) -> ClusterSnapshot:
        """The first snapshot (the current one included) for which `predicate` holds; TimeoutError after
        `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                snapshot = self.current
                if predicate(snapshot):
                    return snapshot
                await changed.wait()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                async for event in self._store.watch(self.current.revision + 1, max_backoff=self._max_backoff):
                    if event.revision > self.current.revision:
                        received = time.monotonic()
                        await self._reload()
                        WATCH_APPLY_SECONDS.observe(time.monotonic() - received)
                    delay = 0.05
            except Exception:
                # The watch itself rides out outages; this is for the unexpected. Start over from current.
                _log.exception("cluster watch under %s failed; restarting it", self._store.keys.root)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)

    async def _reload(self) -> None:
        delay = 0.05
        while True:
            try:
                snapshot = await self._store.snapshot()
                break
            except QuiverError as exc:
                _log.warning("cannot read cluster state (keeping revision %d): %s", self.current.revision, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        if snapshot.revision <= self.current.revision:
            return
        self._current = snapshot
        CLUSTER_REVISION.set(snapshot.revision)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._on_change is not None:
            try:
                result = self._on_change(snapshot)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("ClusterWatcher on_change callback failed")
