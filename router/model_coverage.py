"""How much of the active version a version opened for a new embedding model holds.

A model change is not built from the active version's points (they are the old model's vectors): the client
re-embeds its documents and writes them to the new version. Before the cutover the SRE needs to know how far
that got: of the ids the active version holds, how many the new one holds too. Counting pages through every
id of the active version (ExportPoints, ids only) and looks each page up in the new version (Get, no
vectors), so it runs in the background, at most every COUNT_EVERY_S per version while ClusterStatus is asked,
and the status shows the last count with its time.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from quiver.control_plane import versions
from quiver.control_plane.records import CollectionRecord, ShardMap
from quiver.control_plane.store import ClusterSnapshot
from quiver.shard_channels import ShardPool
from quiver.v1 import router_pb2, shard_pb2
from router.reindex import rows_by_shard

_log = logging.getLogger(__name__)

COUNT_EVERY_S = 30.0
_PAGE = 4096  # ids per page, and at most per Get: a Get answers with metadata, which may be large
_CALL_TIMEOUT_S = 30.0


def _address(snapshot: ClusterSnapshot, shard_map: ShardMap, shard: int) -> str:
    primary = shard_map.shards[shard].primary
    server = snapshot.servers.get(primary)
    if server is None:
        raise LookupError(f"shard {shard} of v{shard_map.version}: its primary {primary} is not registered")
    return server.address


async def count_held(pool: ShardPool, snapshot: ClusterSnapshot, record: CollectionRecord, active: ShardMap, target: ShardMap) -> tuple[int, int]:
    """(ids of `active` that `target` holds too, ids `active` holds), read from each version's primaries."""
    held = total = 0
    for placement in active.shards:
        source = pool.stub(_address(snapshot, active, placement.shard))
        ref = shard_pb2.PartitionRef(collection=record.name, shard=placement.shard, version=active.version)
        after_slot = -1
        while True:
            page = await source.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref, after_slot=after_slot, limit=_PAGE, ids_only=True), timeout=_CALL_TIMEOUT_S)
            ids = list(page.ids)
            total += len(ids)
            found = await asyncio.gather(*(
                pool.stub(_address(snapshot, target, shard)).Get(
                    shard_pb2.GetRequest(ref=shard_pb2.PartitionRef(collection=record.name, shard=shard, version=target.version), ids=[ids[r] for r in rows]),
                    timeout=_CALL_TIMEOUT_S,
                )
                for shard, rows in rows_by_shard(record, ids, len(target.shards))
            ))
            held += sum(len(reply.points) for reply in found)
            if page.done:
                break
            after_slot = page.last_slot
    return held, total


class ModelCoverage:
    """The last count per (collection, version opened for a new model), recounted in the background."""

    def __init__(self, pool: ShardPool) -> None:
        self._pool = pool
        self._counts: dict[tuple[str, int], router_pb2.ModelCoverage] = {}
        self._counting: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._tried: dict[tuple[str, int], float] = {}  # when each count last started: a failing one waits too

    def report(self, snapshot: ClusterSnapshot) -> list[router_pb2.ModelCoverage]:
        """The figures for every version open for a new model now (starting a recount of stale ones)."""
        wanted = []
        for (name, version), shard_map in sorted(snapshot.shard_maps.items()):
            record = snapshot.collections.get(name)
            active = snapshot.shard_maps.get((name, record.active_version)) if record is not None else None
            if record is None or active is None or version == record.active_version or shard_map.state not in ("building", "ready", "active"):
                continue
            model, active_model = versions.spec_of(record, shard_map).model, versions.spec_of(record, active).model
            if shard_map.built_from is not None or model == active_model:
                continue
            key = (name, version)
            last = self._counts.get(key)
            if last is None or last.active_version != active.version:
                last = self._counts[key] = router_pb2.ModelCoverage(collection=name, version=version, model=model, active_version=active.version)
            if time.time() - max(last.counted_unix, self._tried.get(key, 0.0)) >= COUNT_EVERY_S and key not in self._counting:
                self._tried[key] = time.time()
                task = asyncio.ensure_future(self._count(key, snapshot, record, active, shard_map))
                self._counting[key] = task
                task.add_done_callback(lambda _, key=key: self._counting.pop(key, None))  # type: ignore[misc]
            wanted.append(last)
        for key in set(self._counts) - {(c.collection, c.version) for c in wanted}:
            del self._counts[key]
            self._tried.pop(key, None)
        return [router_pb2.ModelCoverage.FromString(c.SerializeToString()) for c in wanted]  # copies: counts go on

    async def _count(self, key: tuple[str, int], snapshot: ClusterSnapshot, record: CollectionRecord, active: ShardMap, target: ShardMap) -> None:
        try:
            held, total = await count_held(self._pool, snapshot, record, active, target)
        except Exception as error:  # noqa: BLE001 - a report: the reason is shown, the next ask counts again
            why = error.details() if isinstance(error, grpc.aio.AioRpcError) else f"{type(error).__name__}: {error}"
            _log.warning("could not count %s v%d's ids in v%d: %s", key[0], active.version, key[1], why)
            if key in self._counts:
                self._counts[key].error = why or "unknown"
            return
        figure = self._counts.get(key)
        if figure is not None and figure.active_version == active.version:
            figure.held, figure.active_points, figure.counted_unix, figure.error = held, total, time.time(), ""

    async def close(self) -> None:
        for task in list(self._counting.values()):
            task.cancel()
        await asyncio.gather(*self._counting.values(), return_exceptions=True)
