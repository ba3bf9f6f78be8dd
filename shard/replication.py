"""Primary/backup replication of a shard server's partitions: PacificA's data path with Elasticsearch's
in-sync set and Kafka's ISR rules, configured by the shard's placement in etcd (records.ShardPlacement).

On the primary of a shard (per its placement, in its term):
- every write is logged locally in the primary's term (its WAL assigns the LSN), then `acknowledge` waits
  until every member of the in-sync set has that LSN durably;
- one `FollowerStream` per other replica sends the records to it in LSN order, exactly as logged: from the
  records just logged, or from the WAL when the follower is behind (catch-up while writes go on);
- a member that fails or does not answer within `ack_timeout_s` is removed from the in-sync set by an etcd
  transaction that also checks this server is still the primary in this term, and only then is the write
  acknowledged; if that transaction fails (a newer term exists, or etcd cannot be reached), the write is
  not acknowledged (UNAVAILABLE: outcome unknown);
- a replica outside the in-sync set that has caught up is added back by a transaction, after which every
  write waits for it too.
On a follower, `Replicate` appends what the primary sends (a sender of an older term than seen is refused),
and `ReplicaStatus` tells a (new) primary where its log ends, raising its term first.

A returning replica whose log holds records the primary lacks (it was a primary, or followed one, in an
older term) is found by comparing the term of its last record with the primary's record at that LSN. Such a
replica, or one whose missing records the primary's log no longer holds, needs the primary's snapshot;
it stays out of the in-sync set (serving no reads) and `needs_snapshot` says so in status.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, TypeVar

import grpc

from quiver.control_plane.records import CollectionRecord, ShardPlacement
from quiver.control_plane.store import ClusterSnapshot, ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import Aborted, DeadlineExceeded, QuiverError, Unavailable
from quiver.metrics import IN_SYNC_CHANGES, REPLICA_ACK_SECONDS
from quiver.shard_channels import ShardPool
from quiver.specs import PartitionKey
from quiver.v1 import shard_pb2
from shard.durable_partition import DurablePartition, LogTrimmed
from shard.partition_registry import PartitionRegistry

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ReplicationPolicy:
    ack_timeout_s: float = 1.0  # an in-sync follower that has not acknowledged a write by then is dropped
    call_timeout_s: float = 5.0  # one Replicate or ReplicaStatus call
    max_batch_bytes: int = 4 * 2**20  # log records per Replicate call, about
    max_queued_bytes: int = 64 * 2**20  # records waiting for one follower; past it, it reads the log instead
    retry_s: float = 0.5  # a follower that failed is tried again after this
    term_wait_s: float = 2.0  # a write naming a newer term than this server knows waits this long for its watch


class Replication:
    """A shard server's replication: the groups it leads, and the checks every replicated write passes."""

    def __init__(
        self, server_id: str, store: ClusterStore, watcher: ClusterWatcher, registry: PartitionRegistry,
        pool: ShardPool, policy: ReplicationPolicy = ReplicationPolicy(),
    ) -> None:
        self.server_id = server_id
        self.store = store
        self.watcher = watcher
        self.registry = registry
        self.pool = pool
        self.policy = policy
        self._groups: dict[PartitionKey, ReplicaGroup] = {}
        self._sync_lock = asyncio.Lock()

    def placement(self, key: PartitionKey, snapshot: ClusterSnapshot | None = None) -> tuple[ShardPlacement, CollectionRecord] | None:
        """The partition's replica group configuration, if a live collection places it (else it is standalone)."""
        snapshot = snapshot or self.watcher.current
        record = snapshot.collections.get(key.collection)
        shard_map = snapshot.shard_maps.get((key.collection, key.version))
        if record is None or shard_map is None or not 0 <= key.shard < len(shard_map.shards):
            return None
        placement = shard_map.shards[key.shard]
        if self.server_id not in placement.server_ids:
            return None
        return placement, record

    def address_of(self, server_id: str) -> str | None:
        server = self.watcher.current.servers.get(server_id)
        return server.address if server is not None else None

    async def sync(self, snapshot: ClusterSnapshot | None = None) -> None:
        """Lead the groups this server is primary of, in their current term; stop leading the others. Run on
        every change of cluster state and whenever a partition is created here."""
        async with self._sync_lock:
            snapshot = snapshot or self.watcher.current
            wanted: dict[PartitionKey, tuple[DurablePartition, ShardPlacement, CollectionRecord]] = {}
            for partition in self.registry.all():
                found = self.placement(partition.spec.key, snapshot)
                if found is None:
                    continue
                placement, record = found
                if placement.term > partition.term:
                    with contextlib.suppress(QuiverError):
                        await partition.observe_term(placement.term)  # a deposed primary stops at once
                if placement.primary == self.server_id:
                    wanted[partition.spec.key] = (partition, placement, record)
            for key in [k for k, g in self._groups.items() if k not in wanted or g.term != wanted[k][1].term or g.partition is not wanted[k][0]]:
                await self._groups.pop(key).stop()
            for key, (partition, placement, record) in wanted.items():
                group = self._groups.get(key)
                if group is None:
                    group = self._groups[key] = ReplicaGroup(self, partition, placement, record)
                    await group.start()
                else:
                    group.update(placement, record)

    async def close(self) -> None:
        for group in list(self._groups.values()):
            await group.stop()
        self._groups.clear()

    def group(self, key: PartitionKey) -> "ReplicaGroup | None":
        return self._groups.get(key)

    async def write(
        self, partition: DurablePartition, term: int, deadline: float | None,
        apply: Callable[[int], Awaitable[tuple[T, int]]],
    ) -> T:
        """A write through this server as the shard's primary: checked (primary, term, enough live in-sync
        replicas) before anything is applied, logged locally by `apply(term)` (which returns its answer and
        LSN), then acknowledged once every in-sync replica has it durably."""
        key = partition.spec.key
        found = self.placement(key)
        if term and (found is None or term > found[0].term):
            # The caller's shard map is newer than this server's view: wait a little for the watch.
            with contextlib.suppress(TimeoutError):
                await self.watcher.wait_for(lambda s: (p := self.placement(key, s)) is not None and p[0].term >= term, self.policy.term_wait_s)
            found = self.placement(key)
        if found is None:
            if term:
                raise Unavailable(f"shard server {self.server_id} does not know partition {key} as part of a replica group yet; nothing was applied; retry")
            return (await apply(0))[0]
        placement, record = found
        if placement.primary != self.server_id or (term and term != placement.term):
            primary = placement.primary
            raise Unavailable(
                f"shard server {self.server_id} is not the primary of partition {key} in term {term or '?'}: the "
                f"primary is {primary} (term {placement.term}); nothing was applied; retry once the router's map is current",
                retry_now=True,
            )
        live = [s for s in placement.in_sync_ids if s == self.server_id or self.address_of(s) is not None]
        if len(live) < record.min_in_sync:
            raise Unavailable(
                f"partition {key}: {len(live)} of its in-sync replicas ({', '.join(placement.in_sync_ids)}) are live, but "
                f"collection {key.collection!r} needs {record.min_in_sync} (min_in_sync) for a write; nothing was applied; "
                "retry once a replica is back or has caught up"
            )
        group = self._groups.get(key)
        if group is None or group.term != placement.term:
            await self.sync()
            group = self._groups.get(key)
            if group is None:
                raise Unavailable(f"partition {key}: shard server {self.server_id} is not leading it now; nothing was applied; retry")
        answer, lsn = await apply(group.term)
        await group.acknowledge(lsn, deadline)
        return answer


class ReplicaGroup:
    """The primary's view of one partition's replica group in one term."""

    def __init__(self, replication: Replication, partition: DurablePartition, placement: ShardPlacement, record: CollectionRecord) -> None:
        self.replication = replication
        self.partition = partition
        self.term = placement.term
        self.placement = placement
        self.record = record
        self.deposed: str | None = None
        self._changed = asyncio.Event()
        self._config_lock = asyncio.Lock()
        self.streams: dict[str, FollowerStream] = {}

    @property
    def key(self) -> PartitionKey:
        return self.partition.spec.key

    async def start(self) -> None:
        await self.partition.observe_term(self.term)
        self.partition.on_logged = self._logged
        self.update(self.placement, self.record)
        _log.info("leading partition %s in term %d, in-sync %s", self.key, self.term, list(self.placement.in_sync_ids))

    async def stop(self) -> None:
        if self.partition.on_logged == self._logged:
            self.partition.on_logged = None
        self.deposed = self.deposed or "this server stopped leading the partition"
        self.notify()
        for stream in self.streams.values():
            await stream.stop()
        self.streams.clear()

    def update(self, placement: ShardPlacement, record: CollectionRecord) -> None:
        """A new configuration in this term (in-sync set or replicas changed)."""
        if placement.term != self.term:
            return
        self.placement, self.record = placement, record
        me = self.replication.server_id
        for server_id in [s for s in self.streams if s not in placement.server_ids]:
            stream = self.streams.pop(server_id)
            asyncio.get_running_loop().create_task(stream.stop())
        for server_id in placement.server_ids:
            if server_id == me:
                continue
            stream = self.streams.get(server_id)
            if stream is None:
                stream = self.streams[server_id] = FollowerStream(self, server_id)
                stream.start()
            stream.in_sync = server_id in placement.in_sync_ids
            if stream.in_sync:
                stream.joining = False
        self.notify()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _logged(self, entries: list[tuple[int, bytes]]) -> None:
        for stream in self.streams.values():
            stream.offer(entries)

    async def acknowledge(self, lsn: int, deadline: float | None) -> None:
        """Returns once every in-sync replica holds `lsn` durably, dropping those that fail or lag past
        `ack_timeout_s` from the in-sync set first; Unavailable when that is impossible (outcome unknown)."""
        policy = self.replication.policy
        started = time.monotonic()
        ack_by = started + policy.ack_timeout_s
        while True:
            if self.deposed:
                raise Unavailable(
                    f"partition {self.key}: shard server {self.replication.server_id} stopped being its primary (term "
                    f"{self.term}: {self.deposed}) before this write reached every in-sync replica; its outcome is unknown; retry"
                )
            waiting = [s for s in self.streams.values() if s.counts and s.acked < lsn]
            if not waiting:
                break
            now = time.monotonic()
            # A follower that failed is asked again at once; it is dropped when that fails too (a failure
            # from before this write, e.g. a probe that ran before its partition existed, is not enough).
            for stream in waiting:
                if stream.broken and stream.failed_at <= started:
                    stream.kick()
            late = [s for s in waiting if (s.broken and s.failed_at > started) or now >= ack_by]
            if late:
                await self._drop(late)
                continue
            if deadline is not None and now >= deadline:
                raise DeadlineExceeded(
                    f"partition {self.key}: the caller's deadline passed while replicas {[s.server_id for s in waiting]} "
                    "were still writing this write; its outcome is unknown"
                )
            wake_at = min(ack_by, deadline) if deadline is not None else ack_by
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(wake_at - now, 0.001))
        if len(self.streams):
            REPLICA_ACK_SECONDS.observe(time.monotonic() - started)
        in_sync = len(self.placement.in_sync_ids)
        if in_sync < self.record.min_in_sync:
            raise Unavailable(
                f"partition {self.key}: this write is durable on {in_sync} in-sync replica(s), fewer than the "
                f"collection's min_in_sync of {self.record.min_in_sync}; its outcome is unknown; retry once replicas are back"
            )

    async def _reconfigure(self, edit: Callable[[ShardPlacement], tuple[str, ...] | None]) -> ShardPlacement | None:
        """Change the in-sync set to `edit(current)` (None: no change) by one transaction that also checks
        this server is still the primary in this term. Returns the placement now stored, or None when a
        newer configuration exists (the group is then deposed); other etcd failures are raised."""
        me, term = self.replication.server_id, self.term

        def mutate(current: ShardPlacement) -> ShardPlacement | None:
            if current.term != term or current.primary != me:
                raise Aborted(f"the shard's configuration moved to term {current.term}, primary {current.primary}")
            in_sync = edit(current)
            return None if in_sync is None else replace(current, in_sync=in_sync)

        async with self._config_lock:
            try:
                return await self.replication.store.update_placement(self.key.collection, self.key.version, self.key.shard, mutate)
            except Aborted as error:
                self.deposed = str(error)
                self.notify()
                return None

    async def _drop(self, streams: list["FollowerStream"]) -> None:
        """Take failed followers out of the in-sync set: in etcd (by transaction, as primary in this term)
        for members, locally for those still joining."""
        for stream in streams:
            stream.joining = False
        members = {s.server_id for s in streams if s.in_sync}
        if not members:
            self.notify()
            return

        def without_members(current: ShardPlacement) -> tuple[str, ...] | None:
            if not members & set(current.in_sync_ids):
                return None
            return tuple(s for s in current.in_sync_ids if s not in members)

        try:
            placement = await self._reconfigure(without_members)
        except QuiverError as error:
            raise Unavailable(
                f"partition {self.key}: replica(s) {sorted(members)} stopped answering and could not be taken out "
                f"of the in-sync set ({error}); this write's outcome is unknown; retry"
            ) from error
        if placement is None:
            return
        _log.warning("partition %s: dropped %s from the in-sync set (term %d)", self.key, sorted(members), self.term)
        IN_SYNC_CHANGES.labels("dropped").inc(len(members))
        self.update(placement, self.record)

    async def join(self, stream: "FollowerStream") -> None:
        """Add a caught-up follower to the in-sync set. From the moment it is `joining`, every write waits
        for it as well; once it holds everything logged before that moment, one transaction adds it."""
        stream.joining = True
        target = self.partition.last_lsn
        while stream.joining and stream.acked < target and not stream.broken:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.replication.policy.call_timeout_s)
        if not stream.joining or stream.broken:
            stream.joining = False
            return
        joiner = stream.server_id

        def with_joiner(current: ShardPlacement) -> tuple[str, ...] | None:
            if joiner in current.in_sync_ids or joiner not in current.server_ids:
                return None
            return (*current.in_sync_ids, joiner)

        try:
            placement = await self._reconfigure(with_joiner)
        except QuiverError as error:
            stream.joining = False
            _log.warning("partition %s: %s has caught up but could not rejoin the in-sync set yet: %s", self.key, joiner, error)
            return
        if placement is None:
            stream.joining = False
            return
        _log.info("partition %s: %s caught up at lsn %d and rejoined the in-sync set (term %d)", self.key, joiner, stream.acked, self.term)
        IN_SYNC_CHANGES.labels("added").inc()
        self.update(placement, self.record)


_SNAPSHOT_CHUNK = 1 << 20
_SLOWEST_TRANSFER_BYTES_S = 10 * 2**20  # a snapshot transfer's timeout assumes at least this rate


def _plan_catch_up(partition: DurablePartition, last_lsn: int, last_term: int) -> tuple[str, int, str]:
    """How to bring a follower whose log ends at (`last_lsn`, `last_term`) level with our log (any thread):
    ("send", next LSN, ""), ("truncate", LSN to keep through, why) or ("snapshot", 0, why).

    Records with one term at one LSN are the same record (one primary per term). If the follower's last
    record is ours, it continues from there (when our log still holds what follows). Otherwise its tail
    diverged: as Kafka's leader epochs do, keep it through the end of its last term in our log (never past
    its own end), and ask again."""
    if last_lsn + 1 < partition.first_logged_lsn:
        return "snapshot", 0, f"it ends at lsn {last_lsn}, and this primary's log now starts at lsn {partition.first_logged_lsn}"
    ours = partition.term_at(last_lsn) if last_lsn <= partition.last_lsn else None
    if ours is not None and ours == last_term:
        return "send", last_lsn + 1, ""
    why = (f"its last record, lsn {last_lsn} of term {last_term}, is "
           + (f"of term {ours} here" if ours is not None else "not in this primary's log"))
    keep = partition.last_lsn_of_terms_through(last_term, min(last_lsn - 1, partition.last_lsn))
    if keep is None or keep + 1 < partition.first_logged_lsn:
        return "snapshot", 0, why + "; the log here cannot tell where they agree"
    return "truncate", keep, why


class FollowerStream:
    """Sends one follower the primary's log records in LSN order; catches it up from the WAL when behind."""

    def __init__(self, group: ReplicaGroup, server_id: str) -> None:
        self.group = group
        self.server_id = server_id
        self.in_sync = False  # a member of the in-sync set in etcd: writes wait for it
        self.joining = False  # rejoining: writes wait for it already
        self.acked = 0  # the follower's last durable LSN, as last reported
        self.broken = False  # its last call failed; it is retried after a pause
        self.failed_at = 0.0  # monotonic time of its last failure
        self.needs_snapshot = ""  # why the log cannot catch it up ("" while it can)
        self._next: int | None = None  # the next LSN to send; None until probed
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def counts(self) -> bool:
        return self.in_sync or self.joining

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"replicate {self.group.key} -> {self.server_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def kick(self) -> None:
        """Retry now, instead of after the pause that follows a failure."""
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def offer(self, entries: list[tuple[int, bytes]]) -> None:
        if self._queued_bytes > self.group.replication.policy.max_queued_bytes:
            # Far behind: stop buffering for it; it reads what it misses from the log.
            self._queue.clear()
            self._queued_bytes = 0
        else:
            self._queue.extend(entries)
            self._queued_bytes += sum(len(p) for _, p in entries)
        self._wake.set()

    def _ref(self) -> shard_pb2.PartitionRef:
        key = self.group.key
        return shard_pb2.PartitionRef(collection=key.collection, shard=key.shard, version=key.version)

    def _stub(self):  # type: ignore[no-untyped-def]
        address = self.group.replication.address_of(self.server_id)
        if address is None:
            raise Unavailable(f"server {self.server_id} is not registered (down)")
        return self.group.replication.pool.stub(address)

    async def _probe(self) -> None:
        """Where the follower's log ends, and whether it continues ours: sets the next LSN to send, after
        cutting off a tail of records we lack or sending our snapshot when our log cannot catch it up."""
        group = self.group
        policy = group.replication.policy
        for _ in range(8):  # each truncation shortens the follower's log; a few rounds always settle it
            reply = await self._stub().ReplicaStatus(
                shard_pb2.ReplicaStatusRequest(ref=self._ref(), term=group.term), timeout=policy.call_timeout_s
            )
            if reply.term > group.term:
                group.deposed = f"replica {self.server_id} has seen term {reply.term}"
                group.notify()
                return
            action, lsn, why = await asyncio.to_thread(_plan_catch_up, group.partition, reply.last_lsn, reply.last_term)
            if action == "send":
                self.needs_snapshot = ""
                self.acked, self._next = lsn - 1, lsn
                return
            if action == "truncate":
                _log.warning("partition %s: %s holds records after lsn %d that this primary lacks (%s); cutting them off",
                             group.key, self.server_id, lsn, why)
                await self._stub().TruncateLog(
                    shard_pb2.TruncateLogRequest(ref=self._ref(), term=group.term, after_lsn=lsn), timeout=policy.call_timeout_s * 6
                )
                continue
            self.needs_snapshot = why
            _log.warning("partition %s: sending %s a snapshot: %s", group.key, self.server_id, why)
            await self._send_snapshot()
            self.needs_snapshot = ""
        return

    async def _send_snapshot(self) -> None:
        """Stream our newest snapshot that the log continues from (taking one if needed) to the follower."""
        partition = self.group.partition
        newest = partition.newest_snapshot()
        if newest is None or newest[0] + 1 < partition.first_logged_lsn:
            await partition.snapshot()
            newest = partition.newest_snapshot()
        assert newest is not None
        lsn, path = newest
        handle = await asyncio.to_thread(open, path, "rb")  # held open: a later prune cannot take it from us
        size = os.fstat(handle.fileno()).st_size
        ref, term = self._ref(), self.group.term

        async def chunks() -> AsyncIterator[shard_pb2.SnapshotChunk]:
            try:
                first = True
                while True:
                    data = await asyncio.to_thread(handle.read, _SNAPSHOT_CHUNK)
                    if not data and not first:
                        return
                    yield shard_pb2.SnapshotChunk(ref=ref, term=term, lsn=lsn, data=data) if first else shard_pb2.SnapshotChunk(data=data)
                    first = False
                    if not data:
                        return
            finally:
                handle.close()

        timeout = self.group.replication.policy.call_timeout_s * 6 + size / _SLOWEST_TRANSFER_BYTES_S
        reply = await self._stub().InstallSnapshot(chunks(), timeout=timeout)
        _log.info("partition %s: %s installed the snapshot at lsn %d (%d bytes)", self.group.key, self.server_id, reply.last_lsn, size)

    async def _next_entries(self) -> list[tuple[int, bytes]]:
        assert self._next is not None
        while self._queue and self._queue[0][0] < self._next:
            self._queued_bytes -= len(self._queue.popleft()[1])
        policy = self.group.replication.policy
        if self._queue and self._queue[0][0] == self._next:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0][1]) <= policy.max_batch_bytes):
                lsn, payload = self._queue.popleft()
                self._queued_bytes -= len(payload)
                batch.append((lsn, payload))
                size += len(payload)
            return batch
        if self._next <= self.group.partition.last_lsn:
            return await asyncio.to_thread(self.group.partition.read_log, self._next - 1, policy.max_batch_bytes)
        return []

    async def _run(self) -> None:
        group = self.group
        policy = group.replication.policy
        while not group.deposed:
            try:
                if self._next is None:
                    await self._probe()
                    if self._next is None:
                        self._failed("its log could not be brought level with the primary's yet")
                        await self._pause(policy.retry_s * 4)
                        continue
                entries = await self._next_entries()
                if not entries:
                    self.broken = False
                    if not self.counts and self.acked >= group.partition.last_lsn:
                        await group.join(self)
                        continue
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), policy.call_timeout_s)
                    continue
                reply = await self._stub().Replicate(
                    shard_pb2.ReplicateRequest(
                        ref=self._ref(), term=group.term, primary=group.replication.server_id,
                        entries=[shard_pb2.LogEntry(lsn=lsn, payload=payload) for lsn, payload in entries],
                    ),
                    timeout=policy.call_timeout_s,
                )
                self.acked = reply.last_lsn
                self._next = reply.last_lsn + 1
                self.broken = False
                group.notify()
            except asyncio.CancelledError:
                raise
            except LogTrimmed as error:
                self.needs_snapshot = str(error)
                self._next = None
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # StaleTerm: a newer primary exists
                    group.deposed = f"replica {self.server_id} refused term {group.term}: {error.details()}"
                    group.notify()
                    return
                self._failed(f"{error.code().name}: {error.details()}")
                await self._pause(policy.retry_s)
            except Exception as error:  # noqa: BLE001 - e.g. the follower is not registered; retried
                self._failed(str(error))
                await self._pause(policy.retry_s)

    def _failed(self, why: str) -> None:
        if not self.broken:
            _log.warning("partition %s: replicating to %s failed: %s", self.group.key, self.server_id, why)
        self.broken = True
        self.failed_at = time.monotonic()
        self._next = None  # probe again: the follower may have restarted with less
        self.group.notify()
