"""Reindex progress that every router shows, not only the one running the build.

A build runs as a task of one router. That router publishes its progress to etcd every few seconds, under a
prefix beside the cluster root (`KeyLayout.reindex_progress_prefix`), so progress updates never wake the
cluster watchers, which reload their whole snapshot on any change under the root. The records are attached
to an etcd lease the publishing router renews with each publication: a router that stops (or is cut off
from etcd) has its records vanish after LEASE_TTL_S, so "a record exists" means "a live router runs that
build", judged by etcd, not by comparing clocks. Any router's ClusterStatus and ReindexStatus add the builds
other routers publish (its own are told apart by a token of this process, not by its display name, which
several routers behind one Service may share). A reindex about to create a version announces it first, so
another router never takes a version still being set up for an abandoned one.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from google.protobuf import json_format

from quiver.control_plane.store import ClusterStore
from quiver.errors import QuiverError
from quiver.v1 import router_pb2
from router.reindex import ReindexBuild

_log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 2.0
LEASE_TTL_S = 15.0  # several missed publications: the router is gone, or cut off from etcd


def progress_message(build: ReindexBuild, reported_by: str = "", token: str = "") -> router_pb2.ReindexProgress:
    summary = build.summary()
    return router_pb2.ReindexProgress(
        collection=summary["collection"], source_version=summary["source_version"], version=summary["version"],
        state=summary["state"], failure=summary["failure"], elapsed_s=summary["elapsed_s"], points_per_s=summary["points_per_s"],
        eta_s=summary["eta_s"], written=summary["written"], reported_by=reported_by, reported_unix=time.time(), publisher=token,
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
        self.token = uuid.uuid4().hex  # this process's records, whatever name several routers share
        self._builds = builds
        self._task: asyncio.Task[None] | None = None
        self._published: set[str] = set()
        self._announced: dict[str, router_pb2.ReindexProgress] = {}  # versions being set up, not built yet
        self._lease: int | None = None

    def _key(self, name: str, version: int) -> str:
        return self._store.keys.reindex_progress(name, version)

    async def announce(self, name: str, source_version: int, version: int) -> None:
        """Before a version is written to etcd: a record saying this router is setting it up (until its build
        starts or `withdraw`), so no other router retires it meanwhile. Raises if etcd cannot take it."""
        key = self._key(name, version)
        self._announced[key] = router_pb2.ReindexProgress(
            collection=name, source_version=source_version, version=version, state="building",
            reported_by=self.reported_by, reported_unix=time.time(), publisher=self.token,
        )
        await self._put(key, self._announced[key])
        self._published.add(key)
        self.ensure_running()

    def withdraw(self, name: str, version: int) -> None:
        self._announced.pop(self._key(name, version), None)

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def _live(self) -> dict[str, router_pb2.ReindexProgress]:
        live = dict(self._announced)
        for build in self._builds():
            if build.running:
                key = self._key(build.name, build.target.version)
                self._announced.pop(key, None)
                live[key] = progress_message(build, self.reported_by, self.token)
        return live

    async def _run(self) -> None:
        while True:
            live = self._live()
            await self._publish(live)
            if not live and not self._live():  # looked at again: a build may have started during the publish
                return
            await asyncio.sleep(PUBLISH_EVERY_S)

    async def _put(self, key: str, progress: router_pb2.ReindexProgress) -> None:
        client = self._store.client
        if self._lease is None or not await client.keepalive_lease(self._lease):
            self._lease = (await client.grant_lease(LEASE_TTL_S)).id
        await client.put(key, json_format.MessageToJson(progress).encode(), lease=self._lease)

    async def _publish(self, live: dict[str, router_pb2.ReindexProgress]) -> None:
        try:
            for key, progress in live.items():
                await self._put(key, progress)
            for key in self._published - live.keys():
                await self._store.client.delete(key)
            self._published = set(live)
        except QuiverError as error:  # etcd away: the next round tries again (the lease outlives a blip)
            _log.warning("could not publish reindex progress: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._announced.clear()
        await self._publish({})
        if self._lease is not None:
            try:
                await self._store.client.revoke_lease(self._lease)
            except QuiverError as error:
                _log.warning("could not revoke the reindex progress lease (its records lapse by themselves): %s", error)
            self._lease = None

    async def others(self, collection: str = "") -> list[router_pb2.ReindexProgress]:
        """Builds other live routers run, of `collection` or all. Unreadable here (etcd away, a record that
        does not parse) means left out: this is a report."""
        try:
            listed = await self._store.messages_under(self._store.keys.reindex_progress_prefix, router_pb2.ReindexProgress)
        except QuiverError as error:
            _log.warning("could not read other routers' reindex progress: %s", error)
            return []
        return [p for p in listed if p.publisher != self.token and (not collection or p.collection == collection)]
