"""The controller: one router at a time (elected through etcd) repairs replica groups whose primary is gone.

When a shard's primary has had no live server record for `promote_after_s` (its lease expired: it died or
was cut off from etcd), the controller asks the shard's other live in-sync replicas where their logs end
and promotes the one holding the most (highest last term, then LSN) in term + 1, by one transaction that
checks the configuration is still the one it read. An acknowledged write is on every in-sync replica, so
the promoted one holds every acknowledged write; the old primary leaves the in-sync set and must catch up
when it returns (its unacknowledged tail is reconciled from the new primary). With no live in-sync
replica to promote, the shard waits for its primary (writes refused, UNAVAILABLE naming it).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

from quiver.control_plane.election import Election
from quiver.control_plane.records import ShardPlacement
from quiver.control_plane.store import ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import Aborted, QuiverError
from quiver.metrics import PROMOTIONS
from quiver.shard_channels import ShardPool
from quiver.v1 import shard_pb2

_log = logging.getLogger(__name__)

ShardKey = tuple[str, int, int]  # collection, version, shard


@dataclass(frozen=True)
class ControllerPolicy:
    promote_after_s: float = 0.0  # past the primary's lease expiry (which is the main grace period)
    interval_s: float = 0.25  # how often the state is checked (besides every watch event)
    probe_timeout_s: float = 1.0
    election_ttl_s: float = 5.0


class Controller:
    def __init__(self, candidate: str, store: ClusterStore, watcher: ClusterWatcher, pool: ShardPool, policy: ControllerPolicy = ControllerPolicy()) -> None:
        self._store = store
        self._watcher = watcher
        self._pool = pool
        self._policy = policy
        self.election = Election(store.client, store.keys.controller, candidate, ttl_s=policy.election_ttl_s)
        self._primary_gone_since: dict[ShardKey, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.promotions = 0

    def start(self) -> None:
        self.election.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="quiver-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.election.stop()

    async def _run(self) -> None:
        while True:
            try:
                if self.election.leader:
                    await self.repair()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad pass must not end the controller
                _log.exception("controller pass failed")
            await asyncio.sleep(self._policy.interval_s)

    async def repair(self) -> None:
        """One pass over every replica group: promote where the primary is gone."""
        snapshot = self._watcher.current
        now = time.monotonic()
        seen: set[ShardKey] = set()
        for (collection, version), shard_map in snapshot.shard_maps.items():
            if collection not in snapshot.collections:
                continue
            for placement in shard_map.shards:
                if any(r.state != "serving" for r in placement.replicas) or placement.primary in snapshot.servers:
                    continue
                key = (collection, version, placement.shard)
                seen.add(key)
                since = self._primary_gone_since.setdefault(key, now)
                if now - since >= self._policy.promote_after_s:
                    await self._promote(key, placement)
        for key in [k for k in self._primary_gone_since if k not in seen]:
            del self._primary_gone_since[key]

    async def _promote(self, key: ShardKey, placement: ShardPlacement) -> None:
        collection, version, shard = key
        servers = self._watcher.current.servers
        candidates = [s for s in placement.in_sync_ids if s != placement.primary and s in servers]
        if not candidates:
            return
        ref = shard_pb2.PartitionRef(collection=collection, shard=shard, version=version)
        replies = await asyncio.gather(
            *(self._pool.stub(servers[s].address).ReplicaStatus(shard_pb2.ReplicaStatusRequest(ref=ref), timeout=self._policy.probe_timeout_s)
              for s in candidates),
            return_exceptions=True,
        )
        positions = {s: (r.last_term, r.last_lsn) for s, r in zip(candidates, replies) if not isinstance(r, BaseException)}
        if not positions:
            _log.warning("shard %s: primary %s is gone and no in-sync replica answers; waiting", key, placement.primary)
            return
        chosen = max(positions, key=lambda s: (positions[s], -candidates.index(s)))
        old = placement

        def mutate(current: ShardPlacement) -> ShardPlacement | None:
            if current.term != old.term or current.primary != old.primary:
                raise Aborted(f"shard {key} changed meanwhile (term {current.term}, primary {current.primary})")
            return replace(current, primary=chosen, term=current.term + 1, in_sync=tuple(s for s in current.in_sync_ids if s != old.primary))

        try:
            await self._store.update_placement(collection, version, shard, mutate)
        except (Aborted, QuiverError) as error:
            _log.warning("promotion in shard %s not made: %s", key, error)
            return
        self.promotions += 1
        PROMOTIONS.inc()
        _log.warning(
            "shard %s: primary %s is gone; promoted %s (log at term %d lsn %d) in term %d",
            key, old.primary, chosen, positions[chosen][0], positions[chosen][1], old.term + 1,
        )
