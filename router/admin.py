"""Collection lifecycle and cluster status, on etcd and the shard servers.

Creating a collection is two-phase so that two concurrent creates of one name cannot both half-succeed:
1. one etcd transaction claims the name, writing the record and a shard map whose replicas are in state
   "creating" (the loser gets ALREADY_EXISTS here and touches no shard);
2. the winner creates every partition on its shard servers, then marks the replicas "serving".
If step 2 fails, the claim is dropped again and the caller gets the shard's error. Routers serve a
collection only once every replica is "serving". After each change the router waits until its own
watcher has seen it, so the next request through this router sees the change (read-your-admin-writes).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

import grpc

from quiver.control_plane.records import AliasRecord, CollectionRecord, Replica, ShardMap, ShardPlacement, VersionSpec
from quiver.control_plane.store import ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, QuiverError
from quiver.specs import MAX_DIM
from quiver.v1 import router_pb2, shard_pb2
from quiver.wire.filters import check_field_name
from quiver.wire.specs import index_from_proto, index_to_proto, metric_from_proto, metric_to_proto
from router.config import RouterConfig
from router.fanout import fan_out, raise_caller_errors, require_coverage
from quiver.shard_channels import ShardPool

_log = logging.getLogger(__name__)

MAX_SHARDS = 1024


def place_shards(
    name: str, shards: int, replication: int, server_ids: list[str], state: str, spec: VersionSpec | None = None,
) -> ShardMap:
    """Round-robin placement of version 1: shard i's replicas on servers i, i+1, ... (distinct servers per shard)."""
    placements = []
    for shard in range(shards):
        chosen = [server_ids[(shard + r) % len(server_ids)] for r in range(replication)]
        placements.append(ShardPlacement(shard, tuple(Replica(s, state) for s in chosen)))
    return ShardMap(name, 1, tuple(placements), spec=spec, created_unix=time.time())


def placement_candidates(server_ids: Iterable[str], drains: Iterable[str], replication: int) -> list[str]:
    """The servers new replicas go on, sorted: drained ones only when the others are too few for the
    replication factor."""
    live = sorted(server_ids)
    drained = set(drains)
    undrained = [s for s in live if s not in drained]
    return undrained if len(undrained) >= replication else live


def _role(placement: ShardPlacement, server_id: str) -> str:
    if server_id == placement.primary:
        return "primary"
    return "in_sync" if server_id in placement.in_sync_ids else "catching_up"


class Budget:
    """What is left of the caller's deadline (monotonic), capping each step's own timeout, so an admin call
    ends (done, or rolled back) about when its caller stops waiting, not after the steps' longest timeouts."""

    def __init__(self, seconds: float | None) -> None:
        # A margin, as for data calls: the router answers with what failed before the caller gives up.
        self._deadline = None if seconds is None else time.monotonic() + seconds * 0.9 - 0.02

    def cap(self, step_s: float) -> float:
        if self._deadline is None:
            return step_s
        return max(0.0, min(step_s, self._deadline - time.monotonic()))


UNLIMITED = Budget(None)


class Admin:
    def __init__(self, config: RouterConfig, store: ClusterStore, watcher: ClusterWatcher, pool: ShardPool) -> None:
        self._config = config
        self._store = store
        self._watcher = watcher
        self._pool = pool
        self._rollbacks: set[asyncio.Future[None]] = set()

    @property
    def store(self) -> ClusterStore:
        return self._store

    @property
    def watcher(self) -> ClusterWatcher:
        return self._watcher

    @property
    def pool(self) -> ShardPool:
        return self._pool

    async def seen(self, revision: int, budget: Budget = UNLIMITED) -> None:
        try:
            await self._watcher.wait_for(lambda snapshot: snapshot.revision >= revision, timeout=budget.cap(5.0))
        except TimeoutError:
            _log.warning("router watcher has not caught up with etcd revision %d yet", revision)

    def info(self, record: CollectionRecord) -> router_pb2.CollectionInfo:
        return router_pb2.CollectionInfo(
            spec=router_pb2.CollectionSpec(
                name=record.name,
                dim=record.dim,
                metric=metric_to_proto(record.metric),
                index=index_to_proto(record.index_kind, record.index_params),
                shards=record.shards,
                replication_factor=record.replication_factor,
                model=record.model,
                min_in_sync=record.min_in_sync,
                partition_key_field=record.partition_key_field,
            ),
            active_version=record.active_version,
            created_unix=int(record.created_unix),
        )

    async def get_collection(self, name: str) -> CollectionRecord:
        return await self._store.get_collection(name)

    async def create_collection(self, spec: router_pb2.CollectionSpec, budget: Budget = UNLIMITED) -> router_pb2.CollectionInfo:
        if not 1 <= spec.dim <= MAX_DIM:
            raise InvalidArgument(f"dim must be between 1 and {MAX_DIM}, got {spec.dim}")
        kind, params = index_from_proto(spec.index)
        shards = spec.shards or 1
        replication = spec.replication_factor or 1
        min_in_sync = spec.min_in_sync or 1
        if spec.partition_key_field:
            check_field_name(spec.partition_key_field, "partition_key_field")
        if shards > MAX_SHARDS:
            raise InvalidArgument(f"shards={shards} exceeds the maximum of {MAX_SHARDS}")
        record = CollectionRecord(
            name=spec.name,
            dim=spec.dim,
            metric=metric_from_proto(spec.metric),
            index_kind=kind,
            index_params=params,
            shards=shards,
            replication_factor=replication,
            model=spec.model,
            active_version=1,
            previous_version=None,
            created_unix=time.time(),
            min_in_sync=min_in_sync,
            partition_key_field=spec.partition_key_field,
        )
        pointed = (await self._store.client.get(self._store.keys.alias(spec.name))) if spec.name else None
        if pointed is not None:
            raise AlreadyExists(f"{spec.name!r} is an alias (`quiver aliases` lists them); a collection needs a name of its own")
        servers = await self._store.list_servers()
        if len(servers) < replication:
            raise FailedPrecondition(
                f"replication_factor {replication} needs at least {replication} live shard servers; {len(servers)} registered"
            )
        server_ids = placement_candidates([s.server_id for s in servers], self._watcher.current.drains, replication)
        addresses = {s.server_id: s.address for s in servers}
        claim = place_shards(spec.name, shards, replication, server_ids, "creating", VersionSpec.of(record))
        try:
            claimed_at = await self._store.create_collection(record, claim)
        except AlreadyExists:
            if not await self._store.take_over_stale_claim(spec.name, time.time() - self._config.stale_claim_s):
                raise
            claimed_at = await self._store.create_collection(record, claim)
        serving = replace(claim, shards=tuple(
            replace(p, replicas=tuple(replace(r, state="serving") for r in p.replicas)) for p in claim.shards
        ))
        try:
            await self.create_partitions(record, claim, addresses, budget)
            # Only into the record this router claimed: if the name was dropped and made again meanwhile,
            # the new collection is someone else's and this create fails.
            await self.seen(await self._store.put_shard_map(serving, collection_revision=claimed_at), budget)
        except Aborted:
            # The partitions are named like the new collection's, which may be using them: leave them.
            raise
        except BaseException:
            # Shielded: the caller's deadline cancels this handler, often right after the step that failed
            # for the same reason, and a rollback cut short would leave the name claimed.
            rollback = asyncio.ensure_future(self._roll_back(record.name, claimed_at, claim, addresses))
            self._rollbacks.add(rollback)
            rollback.add_done_callback(self._rollbacks.discard)
            await asyncio.shield(rollback)
            raise
        return self.info(record)

    async def _roll_back(self, name: str, claimed_at: int, claim: ShardMap, addresses: Mapping[str, str]) -> None:
        try:
            await self._store.drop_collection_at(name, claimed_at)
        finally:
            await self.drop_partitions(name, [claim], addresses)

    async def create_partitions(
        self, record: CollectionRecord, shard_map: ShardMap, addresses: Mapping[str, str], budget: Budget = UNLIMITED,
    ) -> None:
        calls = {}
        for placement in shard_map.shards:
            request = shard_pb2.CreatePartitionRequest(
                spec=shard_pb2.PartitionSpec(
                    ref=shard_pb2.PartitionRef(collection=record.name, shard=placement.shard, version=shard_map.version),
                    dim=record.dim,
                    metric=metric_to_proto(record.metric),
                    index=index_to_proto(record.index_kind, record.index_params),
                    model=record.model,
                )
            )
            for replica in placement.replicas:
                stub = self._pool.stub(addresses[replica.server_id])
                calls[len(calls)] = (lambda stub=stub, request=request: stub.CreatePartition(request, timeout=budget.cap(30)))
        outcomes = await fan_out(calls, budget.cap(60))
        # This router holds the claim, so a partition that already exists is an orphan of an earlier
        # collection of the same name (left on a server that was down at drop time), with the same
        # definition (created=False) or another one (ALREADY_EXISTS): replace it.
        stale = [
            key for key, outcome in zip(calls, outcomes)
            if outcome.code == grpc.StatusCode.ALREADY_EXISTS or (outcome.ok and not outcome.value.created)  # type: ignore[union-attr]
        ]
        others = [o for o in outcomes if o.code != grpc.StatusCode.ALREADY_EXISTS]
        raise_caller_errors(others)
        require_coverage(others, False, f"creating the partitions of {record.name!r}")
        if stale:
            _log.warning("replacing %d stale partitions of %s", len(stale), record.name)
            await self.drop_partitions(record.name, [shard_map], addresses)
            again = await fan_out(calls, budget.cap(60))
            raise_caller_errors(again)
            require_coverage(again, False, f"creating the partitions of {record.name!r}")

    async def drop_partitions(self, name: str, shard_maps: list[ShardMap], addresses: Mapping[str, str]) -> None:
        calls = {}
        for shard_map in shard_maps:
            for placement in shard_map.shards:
                ref = shard_pb2.PartitionRef(collection=name, shard=placement.shard, version=shard_map.version)
                for replica in placement.replicas:
                    if replica.server_id not in addresses:
                        _log.warning("server %s holding a partition of %s is down; its partition stays as an orphan", replica.server_id, name)
                        continue
                    stub = self._pool.stub(addresses[replica.server_id])
                    calls[len(calls)] = (lambda stub=stub, ref=ref: stub.DropPartition(shard_pb2.DropPartitionRequest(ref=ref), timeout=10))
        for outcome in await fan_out(calls, 15):
            if not outcome.ok:
                # An unreachable server keeps an orphan partition: no shard map names it, and a later
                # collection of the same name replaces it at creation (see _create_partitions).
                _log.warning("dropping a partition of %s failed: %s %s", name, outcome.code, outcome.message)

    async def drop_collection(self, name: str, budget: Budget = UNLIMITED) -> None:
        snapshot = self._watcher.current
        # Read from etcd, not this router's snapshot: an alias set through another router a moment ago counts.
        aliases = await self._store.client.get_prefix(self._store.keys.aliases_prefix)
        pointing = sorted(a for a in (_alias_of(kv.value, name) for kv in aliases.kvs) if a)
        if pointing:
            raise FailedPrecondition(
                f"collection {name!r} is named by alias(es) {', '.join(pointing)}; point them at another collection "
                f"or delete them (`quiver alias rm`) before dropping it"
            )
        maps = [m for (collection, _), m in snapshot.shard_maps.items() if collection == name]
        if not maps:
            record = await self._store.get_collection(name)  # NotFound when absent
            maps = [await self._store.get_shard_map(name, record.active_version)]
        revision = await self._store.drop_collection(name)
        await self.seen(revision, budget)
        await self.drop_partitions(name, maps, self._watcher.current.addresses())

    async def drain_server(self, server_id: str, cancel: bool, budget: Budget = UNLIMITED) -> int:
        """Record a drain request for the controller (or withdraw it); the replicas the server holds now."""
        snapshot = self._watcher.current
        held = sum(1 for m in snapshot.shard_maps.values() for p in m.shards if server_id in p.server_ids)
        if not cancel and server_id not in snapshot.servers and not held:
            raise NotFound(f"no shard server {server_id!r} is registered or holds replicas; `quiver status` lists them")
        await self.seen(await self._store.request_drain(server_id, cancel=cancel), budget)
        return held

    async def cluster_status(self) -> router_pb2.ClusterStatusResponse:
        snapshot = self._watcher.current
        response = router_pb2.ClusterStatusResponse(
            servers=[router_pb2.ShardServerStatus(server_id=s.server_id, address=s.address, draining=s.server_id in snapshot.drains)
                     for s in sorted(snapshot.servers.values(), key=lambda s: s.server_id)],
            collections=[self.info(r) for r in sorted(snapshot.collections.values(), key=lambda r: r.name)],
            skipped_records=[router_pb2.SkippedRecord(key=key, reason=reason) for key, reason in snapshot.skipped],
        )
        held = sorted({r.server_id for m in snapshot.shard_maps.values() for p in m.shards for r in p.replicas} & set(snapshot.servers))
        stats = dict(zip(held, await asyncio.gather(*(self.stats_of(snapshot.servers[s].address) for s in held))))
        for (name, version), shard_map in sorted(snapshot.shard_maps.items()):
            for placement in shard_map.shards:
                primary_stats = (stats.get(placement.primary) or {}).get((name, placement.shard, version))
                for replica in placement.replicas:
                    counts = stats.get(replica.server_id)
                    live = snapshot.servers.get(replica.server_id)
                    key = (name, placement.shard, version)
                    stats_of = counts.get(key) if counts is not None else None
                    found = stats_of is not None
                    response.replicas.append(
                        router_pb2.ShardReplicaStatus(
                            collection=name,
                            version=version,
                            shard=placement.shard,
                            server_id=replica.server_id,
                            address=live.address if live is not None else "",
                            state=replica.state if found else "unreachable",
                            point_count=stats_of.point_count if stats_of else 0,
                            trained=stats_of.trained if stats_of else False,
                            write_state=stats_of.write_state if stats_of else "",
                            write_fault=stats_of.write_fault if stats_of else "",
                            role=_role(placement, replica.server_id),
                            term=placement.term,
                            last_lsn=stats_of.last_lsn if stats_of else 0,
                            lag=max(primary_stats.last_lsn - stats_of.last_lsn, 0) if stats_of and primary_stats else 0,
                        )
                    )
        return response

    async def stats_of(self, address: str) -> dict[tuple[str, int, int], shard_pb2.PartitionStats] | None:
        try:
            reply = await self._pool.stub(address).Stats(shard_pb2.StatsRequest(), timeout=self._config.status_timeout_s)
        except Exception:  # noqa: BLE001 - an unreachable server is reported, not raised
            return None
        return {(p.spec.ref.collection, p.spec.ref.shard, p.spec.ref.version): p for p in reply.partitions}


def _alias_of(value: bytes, collection: str) -> str:
    """The alias an alias record defines if it points at `collection`, else ""."""
    try:
        record = AliasRecord.from_json(value)
    except (QuiverError, TypeError, ValueError):  # an unreadable alias record names nothing (the snapshot skips it too)
        return ""
    return record.alias if record.collection == collection else ""
