"""The router's index-version operations: list a collection's versions, cut over to a ready one, roll
back, retire one (the etcd transactions are quiver/control_plane/versions.py; this adds what needs the
shard servers: point counts, and freeing a retired version's partitions)."""
from __future__ import annotations

import asyncio
import logging

from quiver.control_plane import versions
from quiver.control_plane.records import CollectionRecord, ShardMap
from quiver.errors import FailedPrecondition, NotFound
from quiver.v1 import router_pb2, shard_pb2
from quiver.wire.specs import index_to_proto
from router.admin import Admin, Budget, UNLIMITED

_log = logging.getLogger(__name__)


class VersionAdmin:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin
        self._store = admin.store

    async def _point_counts(self, shard_maps: list[ShardMap]) -> dict[int, int | None]:
        """Points each version's shard primaries hold now, by version (None: a primary did not answer)."""
        servers = self._admin.watcher.current.servers
        wanted = sorted({p.primary for m in shard_maps for p in m.shards if p.primary in servers})
        stats = dict(zip(wanted, await asyncio.gather(*(self._admin.stats_of(servers[s].address) for s in wanted))))
        counts: dict[int, int | None] = {}
        for shard_map in shard_maps:
            total: int | None = 0
            for placement in shard_map.shards:
                found = (stats.get(placement.primary) or {}).get((shard_map.collection, placement.shard, shard_map.version))
                total = None if found is None or total is None else total + found.point_count
            counts[shard_map.version] = total
        return counts

    async def list_versions(self, name: str) -> router_pb2.ListVersionsResponse:
        record = await self._store.get_collection(name)
        shard_maps = await versions.list_versions(self._store, name)
        counts = await self._point_counts([m for m in shard_maps if m.state != "retired"])
        reply = router_pb2.ListVersionsResponse(active=record.active_version, previous=record.previous_version or 0)
        for shard_map in shard_maps:
            spec = versions.spec_of(record, shard_map) if shard_map.spec or shard_map.version == record.active_version else None
            info = router_pb2.VersionInfo(
                version=shard_map.version, state=shard_map.state, shards=len(shard_map.shards), failure=shard_map.failure,
                built_from=shard_map.built_from or 0, created_unix=shard_map.created_unix, point_count=counts.get(shard_map.version) or 0,
            )
            if spec is not None:
                info.index.CopyFrom(index_to_proto(spec.index_kind, spec.index_params))
                info.model, info.replication_factor = spec.model, spec.replication_factor
            reply.versions.append(info)
        return reply

    async def _expected(self, name: str, expected_active: int) -> CollectionRecord:
        record = await self._store.get_collection(name)
        if expected_active and record.active_version != expected_active:
            raise FailedPrecondition(
                f"{name!r}: the active version is v{record.active_version}, not v{expected_active} as expected "
                "(another cutover or rollback won); look again before switching"
            )
        return record

    async def cutover(self, name: str, expected_active: int, target: int, force: bool, budget: Budget = UNLIMITED) -> CollectionRecord:
        record = await self._expected(name, expected_active)
        shard_maps = {m.version: m for m in await versions.list_versions(self._store, name)}
        if not target:
            ready = [v for v, m in shard_maps.items() if m.state == "ready"]
            if not ready:
                raise FailedPrecondition(f"cutover of {name!r}: no version is ready (`quiver versions {name}` lists them)")
            target = max(ready)
        if target not in shard_maps:
            raise NotFound(f"collection {name!r} has no version {target}")
        if not force:
            # Writes reach both versions, so a complete build holds what the active version holds.
            counts = await self._point_counts([shard_maps[record.active_version], shard_maps[target]])
            active_count, target_count = counts[record.active_version], counts[target]
            if active_count is None or target_count is None or active_count != target_count:
                raise FailedPrecondition(
                    f"cutover of {name!r} to v{target} refused: it holds {_count(target_count)} points, the active "
                    f"v{record.active_version} holds {_count(active_count)}; wait for the build to finish, or --force"
                )
        updated, revision = await versions.cutover(self._store, name, record.active_version, target)
        await self._admin.seen(revision, budget)
        _log.warning("collection %s: cut over from v%d to v%d", name, record.active_version, target)
        return updated

    async def rollback(self, name: str, expected_active: int, budget: Budget = UNLIMITED) -> CollectionRecord:
        record = await self._expected(name, expected_active)
        updated, revision = await versions.rollback(self._store, name, record.active_version)
        await self._admin.seen(revision, budget)
        _log.warning("collection %s: rolled back from v%d to v%d", name, record.active_version, updated.active_version)
        return updated

    async def retire(self, name: str, version: int, budget: Budget = UNLIMITED) -> None:
        """Mark the version retired (it takes no more writes), then free its partitions on the servers."""
        retired, revision = await versions.set_state(self._store, name, version, "retired")
        await self._admin.seen(revision, budget)
        addresses = {s.server_id: s.address for s in self._admin.watcher.current.servers.values()}
        await self._admin.drop_partitions(name, [retired], addresses)


def _count(count: int | None) -> str:
    return "an unknown number of" if count is None else f"{count:,}"
