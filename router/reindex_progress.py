"""Reindex progress that every router shows, not only the one running the build.

A build runs as a task of one router. That router publishes its progress to etcd every few seconds, under a
prefix beside the cluster root (`KeyLayout.reindex_progress_prefix`), so progress updates never wake the
cluster watchers, which reload their whole snapshot on any change under the root. Any router's
ClusterStatus and ReindexStatus add the builds other routers publish. A record not refreshed for
`STALE_AFTER_S` belongs to a router that stopped: it is left out (and the reindex that comes next treats that
build as abandoned).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from google.protobuf import json_format

from quiver.control_plane.store import ClusterStore
from quiver.errors import QuiverError
from quiver.v1 import router_pb2
from router.reindex import ReindexBuild

_log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 2.0
STALE_AFTER_S = 15.0  # several missed publications: the router is gone, or cut off from etcd


def progress_message(build: ReindexBuild, reported_by: str = "") -> router_pb2.ReindexProgress:
    summary = build.summary()
    return router_pb2.ReindexProgress(
        collection=summary["collection"], source_version=summary["source_version"], version=summary["version"],
        state=summary["state"], failure=summary["failure"], elapsed_s=summary["elapsed_s"], points_per_s=summary["points_per_s"],
        eta_s=summary["eta_s"], written=summary["written"], reported_by=reported_by, reported_unix=time.time(),
        shards=[
            router_pb2.ReindexShardProgress(
                source_shard=p.shard, exported=p.exported, total=p.total, export_done=p.export_done,
                replayed_lsn=p.replayed_lsn, source_lsn=p.source_lsn, built_s=p.built_s,
            )
            for p in summary["shards"]
        ],
    )


class ProgressBoard:
    """Publishes this router's running builds (`builds()`) while any runs, and reads the others'."""

    def __init__(self, store: ClusterStore, reported_by: str, builds: Callable[[], list[ReindexBuild]]) -> None:
        self._store = store
        self.reported_by = reported_by
        self._builds = builds
        self._task: asyncio.Task[None] | None = None
        self._published: set[str] = set()

    def _key(self, build: ReindexBuild) -> str:
        return self._store.keys.reindex_progress(build.name, build.target.version)

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            live = {self._key(b): b for b in self._builds() if b.running}
            await self._publish(live)
            if not live:
                return
            await asyncio.sleep(PUBLISH_EVERY_S)

    async def _publish(self, live: dict[str, ReindexBuild]) -> None:
        try:
            for key, build in live.items():
                await self._store.client.put(key, json_format.MessageToJson(progress_message(build, self.reported_by)).encode())
            for key in self._published - live.keys():
                await self._store.client.delete(key)
            self._published = set(live)
        except QuiverError as error:  # etcd away: the next round tries again; readers see the record age
            _log.warning("could not publish reindex progress: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._publish({})

    async def others(self, collection: str = "") -> list[router_pb2.ReindexProgress]:
        """Builds other routers run and published in the last STALE_AFTER_S, of `collection` or all.
        Unreadable here (etcd away, a record that does not parse) means left out: this is a report."""
        try:
            listed = await self._store.client.get_prefix(self._store.keys.reindex_progress_prefix)
        except QuiverError as error:
            _log.warning("could not read other routers' reindex progress: %s", error)
            return []
        found = []
        now = time.time()
        for kv in listed.kvs:
            try:
                progress = json_format.Parse(kv.value, router_pb2.ReindexProgress())
            except json_format.ParseError as error:
                _log.warning("skipped unreadable reindex progress record %s: %s", kv.key, error)
                continue
            if progress.reported_by == self.reported_by or now - progress.reported_unix > STALE_AFTER_S:
                continue
            if not collection or progress.collection == collection:
                found.append(progress)
        return found
