"""Building a new index version of a collection from its active one while that one serves (a rolling
reindex: new index kind or parameters, shard count or replication factor).

For each shard of the source version v, concurrently:
1. note its primary's term and last LSN L0;
2. export every point (ExportPoints pages), route each by v+1's shard map, and upsert it into v+1's primaries;
3. replay v's log after L0 (ReadLog), routed the same way, and keep following it until the cutover.
Export pages are read at LSNs at or after L0 and the replay applies every write after L0 in order, so once
the replay has reached v's end, each point of v+1 is as v's last write left it: upserts and deletes replace
whole points, and a filter delete is logged as the ids it matched (a fuzzy snapshot plus the log after it,
as ZooKeeper restores its state). Writes go through v's primaries as ever; no router needs to know of v+1.

The cutover (`cutover`) seals v's primaries (they refuse writes from then on, nothing applied), replays up
to the LSN each seal answered, and only then switches the collection to v+1 in one etcd transaction: no write
v acknowledged is missing from v+1. Routers retry writes the seal refused once their watch shows v+1 active.

A build fails (and says why, in the version's `failure`) when v's primary changes during it (a new primary's
log may lack records the old one had shipped here) or v's log is trimmed past the replay position; v is never
touched, and running the reindex again starts a fresh version.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import numpy as np

from quiver.control_plane import versions
from quiver.control_plane.records import CollectionRecord, ShardMap, VersionSpec
from quiver.errors import FailedPrecondition, QuiverError, Unavailable
from quiver.shard_channels import ShardPool
from quiver.v1 import shard_pb2, types_pb2
from router.admin import place_shards
from router.hashring import shard_for_key, shards_for_keys
from router.partition_keys import key_of

_log = logging.getLogger(__name__)

_PAGES_IN_FLIGHT = 4  # export pages being written into v+1 at once, per source shard
_LOG_PAGE_BYTES = 1 << 20
_FOLLOW_PAUSE_S = 0.02  # between reads of a source log that is at its end
_CALL_TIMEOUT_S = 30.0
# CANCELLED: a shard that stops cancels the calls it is serving (a client never sees its own cancellation
# as a status); like UNAVAILABLE it means "ask again", and a new primary then shows as a term change.
_SOURCE_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
# A target primary that is overloaded (the export writes faster than it indexes) is waited for, too.
_TARGET_RETRYABLE = _SOURCE_RETRYABLE | {grpc.StatusCode.RESOURCE_EXHAUSTED}
_ATTEMPTS = 20  # a primary that is down or changing: a call to it is retried this often, a backoff apart


class BuildFailed(Exception):
    """The build cannot go on; the version is marked failed with this reason."""


@dataclass
class SourceProgress:
    shard: int
    term: int = 0
    exported: int = 0
    total: int = 0  # points the source shard held when its export began
    export_done: bool = False
    replayed_lsn: int = 0  # every write of the source at or before this LSN is in v+1
    source_lsn: int = 0  # the source's last LSN when last read
    caught_up: bool = False  # a replay page has reached the end of the source's log since the export ended
    built_s: float = 0.0  # from the build's start until it first caught up


@dataclass
class ReindexBuild:
    """One build of `target` from `source`, run as a task of this router (`start`)."""

    pool: ShardPool
    watcher: Any  # ClusterWatcher
    store: Any  # ClusterStore
    record: CollectionRecord
    source: ShardMap
    target: ShardMap
    # Follow only, from these LSNs of the source's shards (no export): after a switch, the version switched
    # away from is kept up to date with the new active one's writes, so a switch back loses none of them.
    follow_from: dict[int, tuple[int, int]] | None = None  # shard -> (LSN, term)
    started: float = field(default_factory=time.monotonic)
    state: str = "building"  # building, ready, following (follow_from), cut_over, failed, stopped
    failure: str = ""
    written: int = 0  # points and deletes written into v+1
    progress: dict[int, SourceProgress] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _marking: bool = False

    def __post_init__(self) -> None:
        self.progress = {p.shard: SourceProgress(p.shard) for p in self.source.shards}
        if self.follow_from is not None:
            self.state = "following"

    @property
    def name(self) -> str:
        return self.record.name

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.state in ("building", "ready", "following"):
            self.state = "stopped"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- addresses ------------------------------------------------------------------------------------

    def _map(self, version: int) -> ShardMap:
        shard_map = self.watcher.current.shard_maps.get((self.name, version))
        if shard_map is None:
            raise BuildFailed(f"v{version} of {self.name!r} is gone from etcd (dropped or retired meanwhile)")
        return shard_map

    def _ref(self, version: int, shard: int) -> shard_pb2.PartitionRef:
        return shard_pb2.PartitionRef(collection=self.name, shard=shard, version=version)

    def _primary(self, version: int, shard: int) -> tuple[shard_pb2.PartitionRef, str, int]:
        placement = self._map(version).shards[shard]
        server = self.watcher.current.servers.get(placement.primary)
        if server is None:
            raise Unavailable(f"shard {shard} of {self.name!r} v{version}: its primary {placement.primary} is not registered")
        return self._ref(version, shard), server.address, placement.term

    # -- the build ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loops = [asyncio.ensure_future(self._build_from(shard)) for shard in self.progress]
        try:
            # The first shard loop to fail ends them all (gather alone would leave the others running).
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except asyncio.CancelledError:
            raise
        except (BuildFailed, QuiverError, grpc.aio.AioRpcError) as error:
            why = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            await self._fail(why or type(error).__name__)
        except Exception as error:  # noqa: BLE001 - a bug: the version says so rather than building for ever
            _log.exception("reindex of %s to v%d failed", self.name, self.target.version)
            await self._fail(f"{type(error).__name__}: {error}")
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _fail(self, why: str) -> None:
        self.state, self.failure = "failed", why
        _log.error("reindex of %s to v%d failed: %s", self.name, self.target.version, why)
        try:
            await versions.set_state(self.store, self.name, self.target.version, "failed", failure=why)
        except QuiverError as error:
            _log.warning("could not mark %s v%d failed: %s", self.name, self.target.version, error)

    async def _build_from(self, shard: int) -> None:
        progress = self.progress[shard]
        ref = self._ref(self.source.version, shard)
        status = await self._source_call(shard, "ReplicaStatus", shard_pb2.ReplicaStatusRequest(ref=ref))
        progress.term = status.term
        if self.follow_from is not None:
            lsn, term = self.follow_from[shard]
            if status.term != term:
                raise BuildFailed(f"shard {shard} of v{self.source.version} changed primary before the follow began (term {term} -> {status.term})")
            progress.replayed_lsn = progress.source_lsn = lsn
            progress.export_done = True
            await self._follow(shard)
            return
        progress.replayed_lsn = progress.source_lsn = status.last_lsn
        after_slot = -1
        # Pages are written into v+1 several at a time, in any order: a point whose state changed after L0
        # gets its last state from the replay, which starts only once every page is written.
        writing: set[asyncio.Task[None]] = set()
        try:
            while True:
                page = await self._source_call(shard, "ExportPoints", shard_pb2.ExportPointsRequest(ref=ref, after_slot=after_slot, limit=0))  # 0: the shard pages by its message limit
                if after_slot == -1:
                    progress.total = page.total
                if page.ids:
                    if len(writing) >= _PAGES_IN_FLIGHT:
                        done, writing = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()
                    writing.add(asyncio.ensure_future(self._copy_page(progress, page)))
                after_slot = page.last_slot
                if page.done:
                    break
            for task in list(writing):
                await task
        finally:
            for task in writing:
                task.cancel()
        progress.export_done = True
        await self._follow(shard)

    async def _copy_page(self, progress: SourceProgress, page: shard_pb2.ExportPointsResponse) -> None:
        await self._upsert(list(page.ids), page.vectors, list(page.metadata))
        progress.exported += len(page.ids)

    async def _follow(self, shard: int) -> None:
        """Replays the source shard's log from where the export began, for as long as the build runs."""
        progress = self.progress[shard]
        ref = self._ref(self.source.version, shard)
        while True:
            reply = await self._source_call(shard, "ReadLog", shard_pb2.ReadLogRequest(ref=ref, after_lsn=progress.replayed_lsn, max_bytes=_LOG_PAGE_BYTES))
            if reply.term != progress.term:
                raise BuildFailed(
                    f"shard {shard} of v{self.source.version} changed primary during the build (term {progress.term} -> "
                    f"{reply.term}); run the reindex again"
                )
            progress.source_lsn = reply.last_lsn
            expected = progress.replayed_lsn
            for write in reply.writes:
                expected += 1
                if write.lsn != expected:
                    raise BuildFailed(f"shard {shard} of v{self.source.version}: its log skipped from lsn {expected - 1} to {write.lsn}")
            for group in replay_groups(reply.writes):
                if group[0].delete:
                    await self._delete(list(group[0].ids))
                else:
                    ids, vectors, metadata = merged_upserts(group)
                    await self._upsert(ids, vectors, metadata)
                progress.replayed_lsn = group[-1].lsn
            if progress.replayed_lsn >= reply.last_lsn:
                # Everything the source had when this page was read is in v+1: from here on, v+1 trails v by
                # one page of writes at most (under a steady load the log is never found at its very end).
                if not progress.caught_up:
                    progress.built_s = time.monotonic() - self.started
                progress.caught_up = True
                await self._check_ready()
            if not reply.writes:
                await asyncio.sleep(_FOLLOW_PAUSE_S)

    async def _check_ready(self) -> None:
        """Once every shard has caught up: the version is ready in etcd, then here (so whoever sees "ready"
        in ReindexStatus finds it ready for a cutover). One shard's loop does it; the others go on."""
        if self.state != "building" or self._marking or not all(p.caught_up for p in self.progress.values()):
            return
        self._marking = True
        try:
            await versions.set_state(self.store, self.name, self.target.version, "ready")
            self.state = "ready"
            _log.warning("reindex of %s: v%d is built and follows v%d; ready for cutover", self.name, self.target.version, self.source.version)
        except Unavailable as error:  # etcd away for a moment: tried again after the next page
            _log.warning("could not mark %s v%d ready yet: %s", self.name, self.target.version, error)
        finally:
            self._marking = False

    async def _retried(self, what: str, call: Callable[[], Awaitable[Any]], retryable: frozenset[grpc.StatusCode]) -> Any:
        """`call()` retried, a growing pause apart, while the primary it goes to is unregistered or answers a
        `retryable` code (a restart, a failover); any other error is raised as is."""
        last = ""
        for attempt in range(_ATTEMPTS):
            try:
                return await call()
            except Unavailable as error:
                last = str(error)
            except grpc.aio.AioRpcError as error:
                if error.code() not in retryable:
                    raise
                last = error.details() or error.code().name
            await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        raise BuildFailed(f"{what}: no answer after {_ATTEMPTS} attempts: {last}")

    async def _source_call(self, shard: int, method: str, request: Any) -> Any:
        """A call to the source shard's primary, retried while it is unreachable (a restart): a new primary
        shows as a term change, which fails the build."""

        async def call() -> Any:
            _, address, _ = self._primary(self.source.version, shard)
            return await getattr(self.pool.stub(address), method)(request, timeout=_CALL_TIMEOUT_S)

        try:
            return await self._retried(f"shard {shard} of v{self.source.version}, {method}", call, _SOURCE_RETRYABLE)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION and method == "ReadLog":
                raise BuildFailed(f"shard {shard} of v{self.source.version}: {error.details()}; run the reindex again") from None
            raise

    # -- writes into v+1 ------------------------------------------------------------------------------

    def _by_shard(self, ids: list[str]) -> Iterator[tuple[int, list[int]]]:
        return rows_by_shard(self.record, ids, len(self.target.shards))

    async def _upsert(self, ids: list[str], vectors: bytes, metadata: list[Any]) -> None:
        packed = np.frombuffer(vectors, dtype="<f4").reshape(len(ids), -1)
        await asyncio.gather(*(
            self._target_write(shard, "Upsert", shard_pb2.UpsertRequest(
                ids=[ids[r] for r in rows], vectors=packed[rows].tobytes(), metadata=[metadata[r] for r in rows] if metadata else [],
            ))
            for shard, rows in self._by_shard(ids)
        ))
        self.written += len(ids)

    async def _delete(self, ids: list[str]) -> None:
        await asyncio.gather(*(
            self._target_write(shard, "Delete", shard_pb2.DeleteRequest(ids=[ids[r] for r in rows])) for shard, rows in self._by_shard(ids)
        ))
        self.written += len(ids)

    async def _target_write(self, shard: int, method: str, request: Any) -> None:
        """One write into v+1's primary of `shard`, retried across a failover of that primary."""

        async def call() -> None:
            ref, address, term = self._primary(self.target.version, shard)
            request.ref.CopyFrom(ref)
            request.term = term
            request.past_seal = True  # the target may be sealed against routers (a version switched away from)
            await getattr(self.pool.stub(address), method)(request, timeout=_CALL_TIMEOUT_S)

        try:
            await self._retried(f"writing into shard {shard} of v{self.target.version}", call, _TARGET_RETRYABLE)
        except grpc.aio.AioRpcError as error:
            raise BuildFailed(f"writing into shard {shard} of v{self.target.version}: {error.code().name} {error.details()}") from None

    # -- the cutover's part ---------------------------------------------------------------------------

    async def replayed_through(self, lsns: dict[int, int], timeout: float) -> None:
        """Once every source shard's log is replayed up to `lsns[shard]`; FailedPrecondition if the build
        fails or does not get there in `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state == "failed":
                raise FailedPrecondition(f"the build of {self.name!r} v{self.target.version} failed: {self.failure}")
            if not self.running:
                raise FailedPrecondition(f"the build of {self.name!r} v{self.target.version} is not running ({self.state})")
            if all(self.progress[s].export_done and self.progress[s].replayed_lsn >= lsn for s, lsn in lsns.items()):
                return
            if time.monotonic() >= deadline:
                behind = {s: lsn - self.progress[s].replayed_lsn for s, lsn in lsns.items()}
                raise FailedPrecondition(f"the build of {self.name!r} v{self.target.version} did not catch up in {timeout:.0f} s (behind by {behind} writes)")
            await asyncio.sleep(0.005)

    def terms(self) -> dict[int, int]:
        return {s: p.term for s, p in self.progress.items()}

    async def target_positions(self) -> dict[int, tuple[int, int]]:
        """The target version's primaries' (last LSN, term) now: where a follow of it in the other direction
        starts (a different term then means a failover in between, whose new primary may reuse those LSNs)."""
        positions = {}
        for placement in self._map(self.target.version).shards:
            ref, address, _ = self._primary(self.target.version, placement.shard)
            reply = await self.pool.stub(address).ReplicaStatus(shard_pb2.ReplicaStatusRequest(ref=ref), timeout=_CALL_TIMEOUT_S)
            positions[placement.shard] = (reply.last_lsn, reply.term)
        return positions

    # -- reporting ------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        exported = sum(p.exported for p in self.progress.values())
        total = sum(p.total for p in self.progress.values())
        elapsed = time.monotonic() - self.started
        rate = exported / elapsed if elapsed > 0 else 0.0
        left = max(total - exported, 0)
        return {
            "collection": self.name, "source_version": self.source.version, "version": self.target.version, "state": self.state,
            "failure": self.failure, "elapsed_s": elapsed, "points_per_s": rate, "eta_s": left / rate if rate > 0 else 0.0,
            "written": self.written, "shards": [replace(p) for p in self.progress.values()],
        }


def rows_by_shard(record: CollectionRecord, ids: list[str], shards: int) -> Iterator[tuple[int, list[int]]]:
    """(shard, the rows of `ids` it holds) for each of `shards` shards that holds any, as a version of that
    many shards routes them (by partition key for a keyed collection, else by id)."""
    if record.partition_key_field:
        rows_of = np.array([shard_for_key(key_of(i) or i, shards) for i in ids], dtype=np.int64)
    else:
        rows_of = shards_for_keys(ids, shards)
    for shard in np.unique(rows_of).tolist():
        yield shard, np.flatnonzero(rows_of == shard).tolist()


_REPLAY_GROUP_POINTS = 1024  # consecutive logged upserts merged into one write into v+1, at most


def replay_groups(writes: Iterable[shard_pb2.LoggedWrite]) -> Iterator[list[shard_pb2.LoggedWrite]]:
    """The log's writes in order, consecutive upserts grouped while no id repeats and the group stays under
    `_REPLAY_GROUP_POINTS` (one write into v+1 per group, not per logged write: a stream of small writes to v
    would otherwise cost v+1 a round trip and a commit each); a delete is a group of its own. Applying a
    group at once is the same as applying its writes in order, since no point is in two of them."""
    group: list[shard_pb2.LoggedWrite] = []
    seen: set[str] = set()
    for write in writes:
        if write.delete or (group and (len(seen) + len(write.ids) > _REPLAY_GROUP_POINTS or not seen.isdisjoint(write.ids))):
            if group:
                yield group
            group, seen = [], set()
        if write.delete:
            yield [write]
            continue
        group.append(write)
        seen.update(write.ids)
    if group:
        yield group


def merged_upserts(group: list[shard_pb2.LoggedWrite]) -> tuple[list[str], bytes, list[Any]]:
    """One upsert's (ids, packed vectors, metadata) from a group of logged upserts: metadata one per id
    (empty messages for writes that had none) when any write has some, else none."""
    ids = [point_id for write in group for point_id in write.ids]
    vectors = b"".join(write.vectors for write in group)
    if not any(write.metadata for write in group):
        return ids, vectors, []
    metadata: list[Any] = []
    for write in group:
        metadata.extend(write.metadata if write.metadata else [types_pb2.Metadata() for _ in write.ids])
    return ids, vectors, metadata


def plan_version(record: CollectionRecord, source: ShardMap, version: int, spec: VersionSpec, shards: int, server_ids: list[str]) -> ShardMap:
    """v+1's shard map (state "building", replicas "creating"): round-robin placement, started past where
    the source's shard 0 lives so the new version's primaries do not pile onto the same servers."""
    offset = len(source.shards) % max(len(server_ids), 1)
    ordered = server_ids[offset:] + server_ids[:offset]
    planned = place_shards(record.name, shards, spec.replication_factor, ordered, "creating", spec)
    return replace(planned, version=version, state="building", built_from=source.version)


def versions_built_from(shard_maps: Iterable[ShardMap], source: int) -> list[ShardMap]:
    """Versions a reindex of `source` left behind, unfinished or failed (a new reindex retires them)."""
    return [m for m in shard_maps if m.built_from == source and m.state in ("building", "ready", "failed")]
