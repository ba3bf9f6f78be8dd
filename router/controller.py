"""The controller: one router at a time (elected through etcd) repairs replica groups and drains servers.

When a shard's primary has had no live server record for `promote_after_s` (its lease expired: it died or
was cut off from etcd), the controller asks the shard's other live in-sync replicas where their logs end
and promotes the one holding the most (highest last term, then LSN) in term + 1, by one transaction that
checks the configuration is still the one it read. An acknowledged write is on every in-sync replica, so
the promoted one holds every acknowledged write; the old primary leaves the in-sync set and must catch up
when it returns (its unacknowledged tail is reconciled from the new primary). With no live in-sync
replica to promote, the shard waits for its primary (writes refused, UNAVAILABLE naming it).

Re-replication: a replica whose server has stayed gone for `replace_after_s` is replaced, in one
transaction, by a new one on the live server holding the fewest replicas that holds none of this shard
(never two replicas of a shard on one server); its partition is created first, and the primary then
catches it up (log tail or snapshot) and adds it to the in-sync set. A drained server (`quiver drain`)
gets the same treatment at once, but its replica is removed only after the new one is in sync, and a
drained primary hands over to an in-sync replica (term + 1) first, so the shard keeps its replication
factor and its reads throughout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc

from quiver.control_plane.election import Election
from quiver.control_plane.records import Replica, ShardPlacement
from quiver.control_plane.store import ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import Aborted, QuiverError
from quiver.metrics import PROMOTIONS, REPLICAS_MOVED
from quiver.shard_channels import ShardPool
from quiver.v1 import shard_pb2
from quiver.wire.specs import index_to_proto, metric_to_proto

_log = logging.getLogger(__name__)

ShardKey = tuple[str, int, int]  # collection, version, shard


@dataclass(frozen=True)
class ControllerPolicy:
    promote_after_s: float = 0.0  # past the primary's lease expiry (which is the main grace period)
    interval_s: float = 0.25  # how often the state is checked (besides every watch event)
    probe_timeout_s: float = 1.0
    election_ttl_s: float = 5.0
    replace_after_s: float = 60.0  # a replica whose server is gone this long is rebuilt on another server


class Controller:
    def __init__(self, candidate: str, store: ClusterStore, watcher: ClusterWatcher, pool: ShardPool, policy: ControllerPolicy = ControllerPolicy()) -> None:
        self._store = store
        self._watcher = watcher
        self._pool = pool
        self.policy = policy
        self.election = Election(store.client, store.keys.controller, candidate, ttl_s=policy.election_ttl_s)
        self._primary_gone_since: dict[ShardKey, float] = {}
        self._server_gone_since: dict[str, float] = {}
        self.replacements = 0
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
            await asyncio.sleep(self.policy.interval_s)

    async def repair(self) -> None:
        """One pass over every replica group: promote where the primary is gone."""
        snapshot = self._watcher.current
        now = time.monotonic()
        placed = {s for m in snapshot.shard_maps.values() for p in m.shards for s in p.server_ids}
        for server_id in placed - set(snapshot.servers):
            self._server_gone_since.setdefault(server_id, now)
        for server_id in [s for s in self._server_gone_since if s in snapshot.servers or s not in placed]:
            del self._server_gone_since[server_id]
        seen: set[ShardKey] = set()
        for (collection, version), shard_map in snapshot.shard_maps.items():
            if collection not in snapshot.collections:
                continue
            for placement in shard_map.shards:
                if any(r.state != "serving" for r in placement.replicas):
                    continue
                key = (collection, version, placement.shard)
                if placement.primary not in snapshot.servers:
                    seen.add(key)
                    since = self._primary_gone_since.setdefault(key, now)
                    if now - since >= self.policy.promote_after_s:
                        await self._promote(key, placement)
                    continue
                await self._keep_replicated(key, placement, snapshot.collections[collection].replication_factor, now)
        for key in [k for k in self._primary_gone_since if k not in seen]:
            del self._primary_gone_since[key]

    async def _keep_replicated(self, key: ShardKey, placement: ShardPlacement, factor: int, now: float) -> None:
        """Replace replicas on servers gone for good, and move replicas off drained servers."""
        snapshot = self._watcher.current
        gone = [s for s in placement.server_ids
                if s not in snapshot.servers and now - self._server_gone_since.get(s, now) >= self.policy.replace_after_s]
        draining = [s for s in placement.server_ids if s in snapshot.drains]
        healthy = [s for s in placement.server_ids if s in snapshot.servers and s not in snapshot.drains]
        if gone:
            await self._replace(key, placement, gone)
            return
        if not draining:
            return
        if len(healthy) < factor:
            await self._replace(key, placement, [])
            return
        if not all(s in placement.in_sync_ids for s in healthy):
            return  # the new replica is still catching up: the drained one keeps serving meanwhile
        leaving = draining[0]
        if leaving == placement.primary:
            await self._hand_over(key, placement, healthy)
        else:
            await self._remove(key, placement, leaving)

    def _new_home(self, placement: ShardPlacement) -> str | None:
        """The live, undrained server holding the fewest replicas that holds none of this shard."""
        snapshot = self._watcher.current
        load: dict[str, int] = {s: 0 for s in snapshot.servers if s not in snapshot.drains}
        for shard_map in snapshot.shard_maps.values():
            for other in shard_map.shards:
                for server_id in other.server_ids:
                    if server_id in load:
                        load[server_id] += 1
        choices = sorted((n, s) for s, n in load.items() if s not in placement.server_ids)
        return choices[0][1] if choices else None

    async def _replace(self, key: ShardKey, placement: ShardPlacement, gone: list[str]) -> None:
        """A new replica on another server (its partition created first), and the `gone` ones out, in one
        transaction; the primary then catches the new one up and adds it to the in-sync set."""
        collection, version, shard = key
        snapshot = self._watcher.current
        home = self._new_home(placement)
        record = snapshot.collections.get(collection)
        if home is None or record is None:
            if gone:
                _log.warning("shard %s: no server can take a replica in place of %s (every live server holds one)", key, gone)
            return
        spec = shard_pb2.PartitionSpec(
            ref=shard_pb2.PartitionRef(collection=collection, shard=shard, version=version), dim=record.dim,
            metric=metric_to_proto(record.metric), index=index_to_proto(record.index_kind, record.index_params), model=record.model,
        )
        try:
            await self._pool.stub(snapshot.servers[home].address).CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec), timeout=30)
        except grpc.aio.AioRpcError as error:
            _log.warning("shard %s: creating a replica on %s failed: %s", key, home, error.details())
            return
        old = placement

        def mutate(current: ShardPlacement) -> ShardPlacement | None:
            if current.term != old.term or current.server_ids != old.server_ids:
                raise Aborted(f"shard {key} changed meanwhile")
            kept = tuple(r for r in current.replicas if r.server_id not in gone)
            return replace(current, replicas=(*kept, Replica(home, "serving")), in_sync=tuple(s for s in current.in_sync_ids if s not in gone))

        if await self._change(key, mutate):
            self.replacements += 1
            REPLICAS_MOVED.labels("replaced" if gone else "drain").inc()
            _log.warning("shard %s: new replica on %s%s", key, home, f" in place of {gone}" if gone else " (draining)")

    async def _hand_over(self, key: ShardKey, placement: ShardPlacement, healthy: list[str]) -> None:
        """A drained primary gives the role to an in-sync replica, in a new term."""
        chosen = next(s for s in placement.in_sync_ids if s in healthy)
        old = placement

        def mutate(current: ShardPlacement) -> ShardPlacement | None:
            if current.term != old.term or current.primary != old.primary:
                raise Aborted(f"shard {key} changed meanwhile")
            return replace(current, primary=chosen, term=current.term + 1)

        if await self._change(key, mutate):
            _log.warning("shard %s: drained primary %s handed over to %s in term %d", key, old.primary, chosen, old.term + 1)

    async def _remove(self, key: ShardKey, placement: ShardPlacement, leaving: str) -> None:
        old = placement

        def mutate(current: ShardPlacement) -> ShardPlacement | None:
            if current.term != old.term or leaving == current.primary or leaving not in current.server_ids:
                raise Aborted(f"shard {key} changed meanwhile")
            return replace(current, replicas=tuple(r for r in current.replicas if r.server_id != leaving),
                           in_sync=tuple(s for s in current.in_sync_ids if s != leaving))

        if not await self._change(key, mutate):
            return
        _log.warning("shard %s: replica on drained server %s removed", key, leaving)
        server = self._watcher.current.servers.get(leaving)
        if server is not None:
            collection, version, shard = key
            ref = shard_pb2.PartitionRef(collection=collection, shard=shard, version=version)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._pool.stub(server.address).DropPartition(shard_pb2.DropPartitionRequest(ref=ref), timeout=10)

    async def _change(self, key: ShardKey, mutate: Callable[[ShardPlacement], ShardPlacement | None]) -> bool:
        collection, version, shard = key
        try:
            await self._store.update_placement(collection, version, shard, mutate)
        except QuiverError as error:
            _log.warning("shard %s: configuration change not made: %s", key, error)
            return False
        return True

    async def _promote(self, key: ShardKey, placement: ShardPlacement) -> None:
        collection, version, shard = key
        servers = self._watcher.current.servers
        candidates = [s for s in placement.in_sync_ids if s != placement.primary and s in servers]
        if not candidates:
            return
        ref = shard_pb2.PartitionRef(collection=collection, shard=shard, version=version)
        replies = await asyncio.gather(
            *(self._pool.stub(servers[s].address).ReplicaStatus(shard_pb2.ReplicaStatusRequest(ref=ref), timeout=self.policy.probe_timeout_s)
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

        if not await self._change(key, mutate):
            return
        self.promotions += 1
        PROMOTIONS.inc()
        _log.warning(
            "shard %s: primary %s is gone; promoted %s (log at term %d lsn %d) in term %d",
            key, old.primary, chosen, positions[chosen][0], positions[chosen][1], old.term + 1,
        )
