"""One partition made durable and concurrent: WAL + snapshots around a `PartitionState`.

Every mutation (upsert, delete, train, snapshot) goes through one commit loop per partition, an actor:
it takes all writes queued while the previous fsync ran, logs them with ONE fsync (group commit),
applies them under the write lock and only then acknowledges, so an acknowledged write is both on disk
and visible to the next search (read-your-writes). Searches run in worker threads under the read lock;
hnswlib and faiss release the GIL, so they use every core.

Snapshots run inside the same loop (so no write interleaves): state serialised under the read lock, WAL
rotated, snapshot file written atomically, then WAL segments older than the oldest kept snapshot are
dropped. Start-up loads the newest valid snapshot and replays the WAL after it (a torn tail is dropped by
the WAL). Writes wait while a snapshot is written; searches do not.

Storage faults stop writes, never reads. Before a batch is logged the WAL's file system must keep
`min_free_bytes` free after it: otherwise the batch is refused with RESOURCE_EXHAUSTED, nothing appended,
and the next batch checks again, so writes resume by themselves once space is freed. An I/O error while
logging (or a disk that filled up under us) makes the partition read-only: writes answer UNAVAILABLE
naming the error, health and stats report it, and every `fault_retry_s` the next write first tries to
recover the log (`WriteAheadLog.recover`) and, if that works, goes on.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from quiver.errors import DeadlineExceeded, FailedPrecondition, OutOfRange, ResourceExhausted, STALE_TERM_REFUSAL, Unavailable
from quiver.filters import Filter, Metadata
from quiver.metrics import SEARCH_LOCK_WAIT_SECONDS, WRITE_SLICE_HOLD_SECONDS, WRITE_VISIBLE_SECONDS
from quiver.specs import PartitionSpec
from quiver.wire.packed_hits import HitBatch
from shard.executors import ShardExecutors, default_executors, run_in
from shard.heap_release import release_free_heap
from shard.indexes import QueryKnobs
from shard.indexes.base import WouldWait
from shard.indexes.blob_container import STAGING_PREFIX
from shard.partition_state import PartitionState, QueryHits, SearchPolicy
from shard.rwlock import ReadWriteLock
from shard.snapshot_store import SnapshotStore
from shard.storage import OS_STORAGE, Storage, write_file_atomically
from shard.wal import CorruptLog, LogFailed, WriteAheadLog
from shard.wal_codec import DeleteRecord, UpsertRecord, WalRecord, decode, encode, term_of

_log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
TERM_FILE = "term"  # the newest replication term this replica has seen, so a restart still refuses older ones
LOG_POSITION_SECTION = "log_position"  # snapshot section: the term of the record at the snapshot's LSN
INLINE_MAX_QUERIES = 2
INLINE_MAX_EF = 128
APPLY_SLICE_POINTS = 32
# A compaction copies this many IVF lists under one hold of the read lock (~60 ms at 10M points, m=64), so a
# write waits at most that long for the lock.
COMPACT_LISTS_PER_STEP = 256


class StaleTerm(FailedPrecondition):
    """A write from a primary whose term is older than one this replica has seen: it was deposed. Marked, so a
    router tells "my placement is behind" from a caller's mistake and resends once it has caught up."""

    refusal = STALE_TERM_REFUSAL


class LogGap(OutOfRange):
    """Replicated records that do not continue this replica's log; `last_lsn` is where it ends."""

    def __init__(self, last_lsn: int, first: int) -> None:
        super().__init__(f"replicated records start at lsn {first}, but this replica's log ends at lsn {last_lsn}")
        self.last_lsn = last_lsn


class LogTrimmed(Exception):
    """The records asked for were dropped from the log after a snapshot: a follower needs the snapshot."""


@dataclass(frozen=True)
class DurabilityPolicy:
    wal_segment_bytes: int = 64 * 2**20
    snapshot_after_wal_bytes: int = 512 * 2**20
    snapshot_interval_s: float = 600.0
    snapshots_kept: int = 2
    max_batch_writes: int = 256
    # A write is refused (RESOURCE_EXHAUSTED) unless this much stays free on the WAL's file system after it:
    # room for a snapshot to finish and for the operator to act.
    min_free_bytes: int = 256 * 2**20
    fault_retry_s: float = 5.0  # a read-only partition tries to recover its log this often (on a write)
    train_retry_max_s: float = 300.0  # failed IVF-PQ training retries back off from 1 s up to this
    # While searches of the partition are in flight, the commit thread rests this many times as long as
    # each slice held the index lock before it takes the next: applying writes then takes at most
    # 1 / (1 + ratio) of a core from those searches, and the searches waiting for the lock get it between
    # slices. (Lowering the commit thread's priority instead does not bound it: a commit thread preempted
    # while holding the index lock, or the GIL, stalls the searches waiting on it for as long.) 0: no rest.
    commit_yield_ratio: float = 0.0
    # IVF-PQ lists are copied to their exact size once writes have been quiet this long (and enough was written
    # since the last time: ivf_lists.ListCompaction); 0: never.
    compact_lists_after_idle_s: float = 5.0


WRITE_STATES = ("ok", "disk_full", "read_only")


@dataclass
class WriteFault:
    """Why a partition does not take writes now."""

    state: str  # "disk_full" (refused before logging; resumes by itself) or "read_only" (the log failed)
    detail: str
    since_unix: float


@dataclass
class QueryResult:
    ids: list[str]
    scores: np.ndarray
    metadata: list[Metadata] | None
    vectors: np.ndarray | None
    strategy: str
    estimated_cost_us: float = 0.0
    filter_matches: int = 0


@dataclass
class _Write:
    action: Callable[[], Any]  # runs on the commit thread
    future: asyncio.Future[Any]
    reads_state: bool  # must see every earlier write applied before it runs
    deadline: float | None = None  # monotonic; a write still queued then is dropped, never started
    abandoned: bool = False  # its caller went away before it started: dropped too
    queued_at: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


def read_spec(directory: Path, storage: Storage = OS_STORAGE) -> PartitionSpec:
    with storage.open_read(directory / SPEC_FILE) as f:
        return PartitionSpec.from_json(json.load(f))


class DurablePartition:
    def __init__(
        self,
        directory: Path,
        state: PartitionState,
        wal: WriteAheadLog,
        snapshots: SnapshotStore,
        policy: DurabilityPolicy,
        search_policy: SearchPolicy,
        last_snapshot_unix: float,
        storage: Storage,
        server_id: str = "",
        executors: ShardExecutors | None = None,
        last_term: int = 0,
    ) -> None:
        self.directory = directory
        self._storage = storage
        self._executors = executors or default_executors()
        self._commit_thread: ThreadPoolExecutor | None = None  # one thread for this partition's commits, from start()
        self._server = f"shard server {server_id}" if server_id else "this shard server"
        self.fault: WriteFault | None = None
        self._fault_retry_at = 0.0  # monotonic time of the next recovery attempt of a read-only log
        self.on_fault_change: Callable[[DurablePartition], None] | None = None
        self.state = state
        self._wal = wal
        self._snapshots = snapshots
        self._policy = policy
        self._search_policy = search_policy
        self._lock = ReadWriteLock()
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._wal_bytes_at_snapshot = wal.size_bytes
        self.last_snapshot_unix = last_snapshot_unix
        self._last_snapshot_mono = time.monotonic()
        self.searches_served = 0
        self._searches_in_flight = 0  # read by the commit thread to rest between slices (commit_yield_ratio)
        self._closed = False
        self._failed: str | None = None  # set when a logged write could not be applied; writes stop
        self._train_lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._compaction_timer: asyncio.TimerHandle | None = None
        self._compaction: asyncio.Task[None] | None = None
        self.list_compactions = 0
        self._train_not_before = 0.0  # monotonic; after a failed training, backs off
        self.training_failures = 0
        self._train_backoff_s = 1.0
        # Replication: the newest term seen (persisted in TERM_FILE), the term of the last logged record, and
        # who hears of every record logged (the primary's follower streams), in LSN order, before its writer
        # is answered.
        self.term = _read_term(directory, storage)
        self.last_term = last_term
        self.on_logged: Callable[[list[tuple[int, bytes]]], None] | None = None
        self._just_logged: list[tuple[int, bytes]] = []

    @property
    def spec(self) -> PartitionSpec:
        return self.state.spec

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, spec: PartitionSpec, policy: DurabilityPolicy, search_policy: SearchPolicy,
        *, storage: Storage = OS_STORAGE, server_id: str = "", executors: ShardExecutors | None = None,
    ) -> "DurablePartition":
        PartitionState(spec)  # validates the index parameters before anything is written
        storage.make_dirs(directory)
        state = PartitionState(spec, vector_dir=_scratch_dir(directory, storage))
        write_file_atomically(storage, directory / SPEC_FILE, json.dumps(spec.to_json()).encode("utf-8"))
        wal = WriteAheadLog.open(directory / "wal", policy.wal_segment_bytes, storage=storage)
        snapshots = SnapshotStore(directory / "snapshots", policy.snapshots_kept, storage=storage)
        return cls(directory, state, wal, snapshots, policy, search_policy, 0.0, storage, server_id, executors)

    @classmethod
    def open(
        cls, directory: Path, policy: DurabilityPolicy, search_policy: SearchPolicy, *, storage: Storage = OS_STORAGE,
        server_id: str = "", executors: ShardExecutors | None = None,
    ) -> "DurablePartition":
        """Recover: newest valid snapshot, then the WAL after it."""
        _remove_stale_scratch(directory, storage)
        snapshots = SnapshotStore(directory / "snapshots", policy.snapshots_kept, storage=storage)
        loaded = snapshots.load_newest_valid()
        if loaded is not None:
            state = PartitionState.from_sections(loaded.sections, _scratch_dir(directory, storage))
            after, written = loaded.lsn, loaded.written_unix
            last_term = json.loads(loaded.sections[LOG_POSITION_SECTION])["term"] if LOG_POSITION_SECTION in loaded.sections else 0
        else:
            state, after, written, last_term = PartitionState(read_spec(directory, storage), vector_dir=_scratch_dir(directory, storage)), 0, 0.0, 0
        wal = WriteAheadLog.open(directory / "wal", policy.wal_segment_bytes, start_lsn=after, storage=storage)
        replayed = 0
        for lsn, payload in wal.replay(after):
            if lsn != after + replayed + 1:
                # The log no longer reaches back to the snapshot we could load: records are missing.
                raise CorruptLog(
                    f"partition {state.spec.key}: snapshot is at lsn {after} but the WAL resumes at lsn {lsn}; "
                    "records in between are missing"
                )
            record = decode(payload)
            _apply(state, record)
            last_term = record.term
            replayed += 1
        _log.info("partition %s recovered: snapshot lsn %d, %d WAL records replayed, %d points", state.spec.key, after, replayed, state.count)
        return cls(directory, state, wal, snapshots, policy, search_policy, written, storage, server_id, executors, last_term)

    @staticmethod
    def truncate_files_after(directory: Path, lsn: int, policy: DurabilityPolicy, *, storage: Storage = OS_STORAGE) -> int:
        """On a closed partition's files: drop every record after `lsn`, from the log and from the snapshots
        taken after it, so the next `open` recovers the state as of `lsn`. Returns the records removed."""
        SnapshotStore(directory / "snapshots", policy.snapshots_kept, storage=storage).discard_after(lsn)
        return WriteAheadLog.truncate_after(directory / "wal", lsn, storage=storage)

    @staticmethod
    def replace_files_with_snapshot(directory: Path, staged: Path, lsn: int, policy: DurabilityPolicy, *, storage: Storage = OS_STORAGE) -> None:
        """On a closed partition's files: make the verified snapshot file `staged` (at `lsn`) the whole state,
        log and older snapshots removed, so the next `open` starts from it."""
        snapshots = SnapshotStore(directory / "snapshots", policy.snapshots_kept, storage=storage)
        snapshots.discard_after(-1)
        wal_dir = directory / "wal"
        for name in storage.list_dir(wal_dir):
            storage.unlink(wal_dir / name)
        storage.fsync_dir(wal_dir)
        storage.replace(staged, snapshots.path_of(lsn))
        storage.fsync_dir(directory / "snapshots")

    def newest_snapshot(self) -> tuple[int, Path] | None:
        """The newest snapshot file's LSN and path (a primary sends it to a follower its log cannot catch up)."""
        kept = self._snapshots.kept_lsns()
        return (kept[-1], self._snapshots.path_of(kept[-1])) if kept else None

    def start(self) -> None:
        self._commit_thread = self._executors.commit_thread(str(self.spec.key))
        self._loop_task = asyncio.get_running_loop().create_task(self._commit_loop(), name=f"commit {self.spec.key}")
        self._maybe_train_in_background()

    async def close(self, *, snapshot: bool = False) -> None:
        if self._closed:
            return
        if snapshot and self._wal.last_lsn > (self._snapshots.kept_lsns() or [0])[-1]:
            await self.snapshot()
        if self._compaction_timer is not None:
            self._compaction_timer.cancel()
        for task in (self._background, self._compaction):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._closed = True
        await self._queue.put(None)
        if self._loop_task is not None:
            await self._loop_task
        if self._commit_thread is not None:
            self._commit_thread.shutdown(wait=False)
        self._wal.close()

    async def destroy(self) -> None:
        await self.close()
        await asyncio.to_thread(self._storage.remove_tree, self.directory)

    # -- the commit loop ----------------------------------------------------------------------------

    async def _submit(self, action: Callable[[], Any], *, reads_state: bool = True, deadline: float | None = None) -> Any:
        if self._closed:
            raise Unavailable(f"partition {self.spec.key} is closing")
        if self._failed:
            raise Unavailable(f"partition {self.spec.key} stopped taking writes: {self._failed}; restart the shard server to recover from its log")
        if self.fault is not None and self.fault.state == "read_only" and time.monotonic() < self._fault_retry_at:
            raise Unavailable(self._read_only_message())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        write = _Write(action, future, reads_state, deadline)
        await self._queue.put(write)
        try:
            # Shielded: once a write is in a commit batch it runs to its end whatever its caller does.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            write.abandoned = True
            raise

    async def _commit_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._policy.max_batch_writes and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            fault_before = self.fault
            try:
                assert self._commit_thread is not None
                outcomes = await run_in(self._commit_thread, self._commit_batch, batch)
            except Exception as error:  # noqa: BLE001 - a bug must fail these writes, not stall the partition
                _log.exception("commit of %d writes to %s failed", len(batch), self.spec.key)
                outcomes = [(False, error)] * len(batch)
            logged, self._just_logged = self._just_logged, []
            if logged and self.on_logged is not None:
                try:
                    self.on_logged(logged)
                except Exception:  # noqa: BLE001 - a follower stream's bug must not fail the local writes
                    _log.exception("handing logged records of %s to its followers failed", self.spec.key)
            for write, (ok, value) in zip(batch, outcomes):
                if write.abandoned:
                    write.future.cancel()  # nobody waits for its answer
                if write.future.done():
                    continue
                if ok:
                    WRITE_VISIBLE_SECONDS.observe(time.monotonic() - write.queued_at)
                    write.future.set_result(value)
                else:
                    write.future.set_exception(value)
            if self.fault is not fault_before and self.on_fault_change is not None:
                self.on_fault_change(self)
            self._maybe_train_in_background()
            self._arm_compaction()
            if stop:
                return

    def _commit_batch(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """Runs on a worker thread. An action returns a `_Logged` record to log and apply, or a plain result.

        Records are logged in runs sharing one fsync; a run is flushed before any action that reads the
        state (a delete, a snapshot), so that action sees every write queued ahead of it.
        """
        outcomes: list[tuple[bool, Any]] = []
        pending: list[tuple[int, _Logged]] = []
        for position, write in enumerate(batch):
            # Checked here, when the write would start, not when it was queued: it may have waited for the
            # commit thread (a long fsync, a snapshot) past its caller's deadline.
            if write.abandoned or write.expired(time.monotonic()):
                outcomes.append((False, DeadlineExceeded(
                    f"partition {self.spec.key}: the caller's deadline passed (or the caller left) while this write "
                    "waited in the queue; it was not applied")))
                continue
            if write.reads_state and pending:
                self._flush(pending, outcomes)
                pending = []
            try:
                value = write.action()
            except Exception as error:  # noqa: BLE001 - reported to that caller alone
                outcomes.append((False, error))
                continue
            outcomes.append((True, value))
            if isinstance(value, _Logged):
                pending.append((position, value))
            elif isinstance(value, _LoggedBatch):
                pending.extend((position, logged) for logged in value.records)
        if pending:
            self._flush(pending, outcomes)
        self._maybe_snapshot()
        return outcomes

    def _flush(self, pending: list[tuple[int, "_Logged"]], outcomes: list[tuple[bool, Any]]) -> None:
        payloads = [logged.payload if logged.payload is not None else encode(logged.record) for _, logged in pending]
        refusal = self._refusal(sum(map(len, payloads)))
        if refusal is not None:
            for position, _ in pending:
                outcomes[position] = (False, refusal)
            return
        try:
            lsns = self._wal.append_batch(payloads)
        except (OSError, LogFailed) as error:
            # After a failed write or fsync the records may or may not be on disk: say so.
            _log.exception("WAL write failed for %s", self.spec.key)
            self._set_fault("read_only", f"write-ahead log write failed at {self._wal_path()}: {self._wal.failure or error}")
            failure = Unavailable(f"partition {self.spec.key} on {self._server}: write-ahead log write failed ({error}); the outcome of this write is unknown; the partition is read-only until its log recovers")
            for position, _ in pending:
                outcomes[position] = (False, failure)
            return
        if self.fault is not None:
            _log.warning("partition %s takes writes again (was %s: %s)", self.spec.key, self.fault.state, self.fault.detail)
            self.fault = None
        self._just_logged.extend(zip(lsns, payloads))
        self.last_term = pending[-1][1].record.term
        # Applied in slices of about APPLY_SLICE_POINTS points, each under the write lock on its own: a batch
        # of thousands of HNSW inserts held under one lock would stall every search of the partition for as
        # long, and so would one large upsert, which is cut into pieces for that (applied in order, so the
        # last of an id repeated across pieces still wins). Searches between slices may see part of a batch,
        # or of an upsert: all of it is logged, none of it acknowledged yet.
        unapplied: set[int] = set()  # positions of records a piece of which failed to apply
        for group in _slices(list(zip(pending, lsns))):
            with self._lock.write():
                held = time.perf_counter()
                for piece, (position, logged), lsn, last in group:
                    if position in unapplied:
                        continue
                    try:
                        _apply(self.state, piece)
                    except Exception as error:  # noqa: BLE001 - logged but not applied: memory and log disagree
                        _log.critical("partition %s: logged write %d could not be applied", self.spec.key, lsn, exc_info=True)
                        self._failed = f"write {lsn} was logged but could not be applied ({error})"
                        outcomes[position] = (False, Unavailable(self._failed))
                        unapplied.add(position)
                        continue
                    if last:
                        outcomes[position] = (True, logged.result(lsn))
                hold = time.perf_counter() - held
            WRITE_SLICE_HOLD_SECONDS.observe(hold)
            if self._policy.commit_yield_ratio > 0 and self._searches_in_flight:
                time.sleep(hold * self._policy.commit_yield_ratio)

    def _refusal(self, payload_bytes: int) -> Exception | None:
        """Why a batch of this size must not be logged now (commit thread), or None. A read-only log that is
        due for a retry is recovered here first."""
        if self._wal.failure is not None:
            if time.monotonic() < self._fault_retry_at:
                return Unavailable(self._read_only_message())
            try:
                self._wal.recover()
            except OSError as error:
                self._set_fault("read_only", f"write-ahead log at {self._wal_path()} failed ({self._wal.failure}) "
                                             f"and could not recover yet ({error.strerror or error})")
                return Unavailable(self._read_only_message())
        wal_dir = self._wal_path()
        try:
            free = self._storage.free_bytes(wal_dir)
        except OSError as error:
            return Unavailable(f"partition {self.spec.key} on {self._server}: cannot read the free space of {wal_dir} ({error}); this write was not applied")
        needed = payload_bytes + 64 * (1 + payload_bytes // 2**16)  # headers, roughly; exactness is not needed
        if free - needed >= self._policy.min_free_bytes:
            return None
        detail = (f"disk full at {wal_dir}: {free} bytes free, and {self._policy.min_free_bytes} must stay free "
                  f"after this write of {needed} bytes")
        if self.fault is None or self.fault.detail != detail:
            self._set_fault("disk_full", detail)
        return ResourceExhausted(
            f"partition {self.spec.key} on {self._server}: {detail}; this write was not applied. Free space on "
            "that volume (or grow it); reads go on, and writes resume by themselves once there is room",
            retry_after_s=self._policy.fault_retry_s,
        )

    def _set_fault(self, state: str, detail: str) -> None:
        if self.fault is None or self.fault.state != state:
            _log.error("partition %s is %s: %s", self.spec.key, state.replace("_", " "), detail)
        self.fault = WriteFault(state, detail, time.time())
        if state == "read_only":
            self._fault_retry_at = time.monotonic() + self._policy.fault_retry_s

    def _read_only_message(self) -> str:
        assert self.fault is not None
        return (f"partition {self.spec.key} on {self._server} is read-only since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.fault.since_unix))}: {self.fault.detail}; "
                f"this write was not applied. Reads go on; it retries its log every {self._policy.fault_retry_s:g} s "
                "(on a write), and a restart of the shard server recovers it from its log")

    def _wal_path(self) -> Path:
        return self.directory / "wal"

    def _maybe_snapshot(self) -> None:
        grown = self._wal.size_bytes - self._wal_bytes_at_snapshot
        stale = time.monotonic() - self._last_snapshot_mono > self._policy.snapshot_interval_s
        if grown >= self._policy.snapshot_after_wal_bytes or (stale and grown > 0):
            try:
                self._snapshot_now()
            except Exception:  # noqa: BLE001 - the writes are safe in the WAL; try again next time
                _log.exception("snapshot of %s failed", self.spec.key)

    def _snapshot_now(self) -> int:
        if self._wal.failure is not None:
            # Rotating a failed log could leave its uncertain tail in a segment that is no longer the last.
            raise Unavailable(self._read_only_message() if self.fault else f"partition {self.spec.key}: its log has failed")
        with self._lock.read():
            sections = self.state.to_sections()
        sections[LOG_POSITION_SECTION] = json.dumps({"term": self.last_term}).encode("utf-8")
        lsn = self._wal.last_lsn
        self._wal.rotate()
        self._snapshots.write(lsn, sections)
        kept = self._snapshots.kept_lsns()
        # Keep the log back to the OLDEST kept snapshot: if the newest one is ever found corrupt, the
        # older one plus the log still recovers everything. With a single snapshot nothing is dropped.
        if len(kept) >= 2:
            self._wal.drop_segments_before(min(kept) + 1)
        self._wal_bytes_at_snapshot = self._wal.size_bytes
        self.last_snapshot_unix = time.time()
        self._last_snapshot_mono = time.monotonic()
        return lsn

    # -- writes -------------------------------------------------------------------------------------

    async def upsert(
        self, ids: list[str], vectors: np.ndarray, metadata: list[Metadata] | None, *, deadline: float | None = None,
        term: int = 0,
    ) -> int:
        """`vectors` must already be validated and prepared (normalised under cosine). `deadline` (monotonic):
        if the write is still queued then, it is dropped and DeadlineExceeded raised; nothing is applied.
        `term`: the primary term the write is logged in (0 outside replication); StaleTerm, nothing applied,
        if this replica has seen a newer one."""
        record = UpsertRecord(ids, vectors, metadata, term)

        def action() -> Any:
            self._check_term(term)
            return _Logged(record, lambda lsn: lsn)

        return int(await self._submit(action, reads_state=False, deadline=deadline))

    async def delete(
        self, ids: Sequence[str], flt: Filter | None, *, deadline: float | None = None, term: int = 0,
    ) -> tuple[int, int]:
        def action() -> Any:
            self._check_term(term)
            targets = dict.fromkeys(i for i in ids if i in self.state.ids)
            if flt is not None:
                targets.update(dict.fromkeys(self.state.ids_matching(flt)))
            if not targets:
                return (0, self._wal.last_lsn)
            return _Logged(DeleteRecord(list(targets), term), lambda lsn: (len(targets), lsn))

        return await self._submit(action, deadline=deadline)  # type: ignore[no-any-return]

    # -- replication --------------------------------------------------------------------------------

    def _check_term(self, term: int) -> None:
        """Commit thread: refuse a write of an older term than seen; remember a newer one, durably first."""
        if term and term < self.term:
            raise StaleTerm(f"partition {self.spec.key}: a write of term {term} arrived, but term {self.term} has begun")
        if term > self.term:
            write_file_atomically(self._storage, self.directory / TERM_FILE, str(term).encode())
            self.term = term

    async def observe_term(self, term: int) -> int:
        """Refuse writes of terms older than `term` from now on (a new primary announced itself); returns the
        newest term seen. Raises nothing for an older `term`: the caller compares."""
        if term <= self.term:
            return self.term

        def action() -> int:
            self._check_term(term)
            return self.term

        return int(await self._submit(action))

    async def log_position(self, term: int = 0) -> tuple[int, int, int]:
        """(newest term seen, last LSN, term of the last record), read between commits so the three agree;
        a `term` newer than seen is observed first, as `observe_term` does."""

        def action() -> tuple[int, int, int]:
            self._check_term(term)
            return self.term, self._wal.last_lsn, self.last_term

        return await self._submit(action)  # type: ignore[no-any-return]

    async def append_replicated(self, entries: list[tuple[int, bytes]], term: int, *, deadline: float | None = None) -> int:
        """A follower's side of replication: log and apply the primary's records as they are, at the LSNs
        the primary gave them; returns the last durable LSN. Records this log already holds are skipped (a
        resend after a lost answer); records that do not continue it raise LogGap; StaleTerm when the
        sender's term is older than one seen here."""

        def action() -> Any:
            self._check_term(term)
            last = self._wal.last_lsn
            fresh = [(lsn, payload) for lsn, payload in entries if lsn > last]
            if not fresh:
                return last
            if fresh[0][0] != last + 1 or any(b[0] != a[0] + 1 for a, b in zip(fresh, fresh[1:])):
                raise LogGap(last, fresh[0][0])
            return _LoggedBatch([_Logged(decode(payload), lambda lsn: lsn, payload) for _, payload in fresh])

        return int(await self._submit(action, deadline=deadline))

    @property
    def last_lsn(self) -> int:
        return self._wal.last_lsn

    @property
    def first_logged_lsn(self) -> int:
        """The oldest LSN the log can still hand out (older ones live only in snapshots)."""
        return self._wal.first_lsn

    def read_log(self, after: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Any thread: logged records after LSN `after`, in order, up to about `max_bytes`; LogTrimmed when
        the log no longer reaches back that far."""
        if after + 1 < self._wal.first_lsn:
            raise LogTrimmed(f"partition {self.spec.key}: the log starts at lsn {self._wal.first_lsn}, after {after + 1}")
        found: list[tuple[int, bytes]] = []
        size = 0
        try:
            for lsn, payload in self._wal.replay(after):
                if found and size + len(payload) > max_bytes:
                    break
                found.append((lsn, payload))
                size += len(payload)
        except FileNotFoundError as error:  # a snapshot dropped the segment while it was read
            raise LogTrimmed(f"partition {self.spec.key}: {error}") from None
        if found and found[0][0] != after + 1:
            raise LogTrimmed(f"partition {self.spec.key}: the log resumes at lsn {found[0][0]}, after {after + 1}")
        return found

    def last_lsn_of_terms_through(self, term: int, upto: int) -> int | None:
        """Any thread: the last LSN (at most `upto`) whose record's term is `term` or older: where a replica
        whose last term is `term` stops agreeing with this log. Terms only grow along a log, so that is a
        prefix. None when the log no longer reaches back far enough to tell."""
        first = self._wal.first_lsn
        if upto < first:
            return upto if upto == 0 else None
        best: int | None = None
        try:
            for lsn, payload in self._wal.replay(first - 1):
                if lsn > upto or term_of(payload) > term:
                    break
                best = lsn
        except FileNotFoundError:
            return None
        if best is None:
            return first - 1 if first == 1 else None
        return best

    def term_at(self, lsn: int) -> int | None:
        """Any thread: the term of the record at `lsn` (0 for lsn 0), or None when the log no longer has it."""
        if lsn == 0:
            return 0
        if lsn == self._wal.last_lsn:
            return self.last_term
        try:
            entries = self.read_log(lsn - 1, 1)
        except LogTrimmed:
            return None
        return term_of(entries[0][1]) if entries and entries[0][0] == lsn else None

    async def train(self, sample: np.ndarray | None) -> int:
        """Train IVF-PQ without stalling writes or searches: the build snapshot is taken in the commit
        loop (so it sees every earlier write), k-means and indexing run with no lock held, and the swap
        under the write lock only catches up with writes made meanwhile. Until then searches stay exact."""
        if self.spec.index_kind != "ivf_pq":
            return 0
        index = self.state.index
        async with self._train_lock:

            def begin() -> Any:
                with self._lock.read():
                    return index.start_build(sample)  # type: ignore[attr-defined]

            build = await self._submit(begin)
            await run_in(self._executors.index_builds, build.run)

            def finish() -> int:
                with self._lock.write():
                    index.install(build)  # type: ignore[attr-defined]
                # Training is not in the WAL: make it durable with a snapshot right away.
                self._snapshot_now()
                return int(build.trained_on)

            trained_on = int(await self._submit(finish))
            del build  # its training sample and buffered vectors, before the heap is trimmed
            await run_in(self._executors.index_builds, release_free_heap)
            return trained_on

    def _maybe_train_in_background(self) -> None:
        if (self.state.index.wants_training and not self._train_lock.locked() and not self._closed
                and time.monotonic() >= self._train_not_before):
            self._background = asyncio.get_running_loop().create_task(self._train_quietly(), name=f"train {self.spec.key}")

    async def _train_quietly(self) -> None:
        try:
            trained_on = await self.train(None)
        except Exception:  # noqa: BLE001 - searches stay exact; a later write tries again, after a back-off
            _log.exception("background training of %s failed; next try in %.0f s", self.spec.key, self._train_backoff_s)
            self.training_failures += 1
            self._train_not_before = time.monotonic() + self._train_backoff_s
            self._train_backoff_s = min(2 * self._train_backoff_s, self._policy.train_retry_max_s)
            return
        self._train_backoff_s = 1.0
        _log.info("partition %s trained IVF-PQ on %d vectors", self.spec.key, trained_on)

    def _arm_compaction(self) -> None:
        """Writes just landed: (re)start the quiet period after which the IVF lists are compacted."""
        idle = self._policy.compact_lists_after_idle_s
        if idle <= 0 or self._closed or not getattr(self.state.index, "wants_compaction", False):
            return
        if self._compaction_timer is not None:
            self._compaction_timer.cancel()
        self._compaction_timer = asyncio.get_running_loop().call_later(idle, self._start_compaction)

    def _start_compaction(self) -> None:
        self._compaction_timer = None
        # Training compacts the lists it builds; a running compaction that goes stale is re-armed by the
        # write that made it stale.
        if self._closed or self._train_lock.locked() or (self._compaction is not None and not self._compaction.done()):
            return
        self._compaction = asyncio.get_running_loop().create_task(self._compact_lists(), name=f"compact {self.spec.key}")

    async def _compact_lists(self) -> None:
        """Copy the IVF lists to their exact size a few at a time under the read lock (searches go on; writes
        wait one step at most) and swap the copy in under the write lock, unless a write made it stale."""
        index = self.state.index
        pool = self._executors.index_builds

        def begin() -> Any:
            with self._lock.read():
                return index.start_compaction()  # type: ignore[attr-defined]

        def step(job: Any) -> None:
            with self._lock.read():
                job.copy(COMPACT_LISTS_PER_STEP)

        def finish(job: Any) -> bool:
            with self._lock.write():
                return bool(index.finish_compaction(job))  # type: ignore[attr-defined]

        try:
            job = await run_in(pool, begin)
            while job is not None and not job.done and not job.stale:
                await run_in(pool, step, job)
            if job is None or not await run_in(pool, finish, job):
                return
            self.list_compactions += 1
            del job  # the old lists are freed by the swap; the heap's free pages go back now
            await run_in(pool, release_free_heap)
        except Exception:  # noqa: BLE001 - an optimisation: the lists stay as they were, the next quiet period retries
            _log.exception("compacting the IVF lists of %s failed", self.spec.key)

    async def snapshot(self) -> int:
        return int(await self._submit(self._snapshot_now))

    # -- reads --------------------------------------------------------------------------------------

    async def search(
        self,
        queries: np.ndarray,
        k: int,
        flt: Filter | None,
        knobs: QueryKnobs,
        force_exact: bool,
        include_metadata: bool,
        include_vectors: bool,
        packed: bool = False,
    ) -> list[QueryResult] | HitBatch:
        """Each query's results; or (packed: no metadata or vectors) the batch's hits in flat arrays, their ids
        gathered as bytes under the read lock (a label names its id only while no write can reuse it)."""
        def run(with_knobs: QueryKnobs = knobs) -> list[QueryResult] | HitBatch:
            hits = self.state.search(queries, k, flt, with_knobs, force_exact, self._search_policy, packed=packed)
            if isinstance(hits, HitBatch):
                return hits
            return [self._result(h, include_metadata, include_vectors) for h in hits]

        def run_locked(with_knobs: QueryKnobs) -> list[QueryResult] | HitBatch:
            asked = time.perf_counter()
            with self._lock.read():
                SEARCH_LOCK_WAIT_SECONDS.observe(time.perf_counter() - asked)
                return run(with_knobs)

        # A single unfiltered ANN query takes ~0.1 ms: handing it to a worker thread costs more than that,
        # so it runs on the event loop when no writer holds or waits for the lock. Everything else
        # (batches, filters, exact scans) goes to threads, where hnswlib/faiss use all cores.
        # On the loop it must never wait either: an HNSW index busy at another ef goes to a thread instead.
        results = None
        self._searches_in_flight += 1
        try:
            if self.runs_on_loop(len(queries), flt is not None, knobs.ef_search, force_exact) and self._lock.try_acquire_read():
                try:
                    # Built, not dataclasses.replace'd: replace() introspects the fields, several us a query.
                    results = run(QueryKnobs(ef_search=knobs.ef_search, nprobe=knobs.nprobe, threads=knobs.threads, no_wait=True))
                except WouldWait:
                    results = None
                finally:
                    self._lock.release_read()
            if results is None:
                threads = self._executors.sizes.searches  # 0 (one per core): hnswlib uses every core too
                results = await run_in(self._executors.searches, run_locked, replace(knobs, threads=threads) if threads else knobs)
        finally:
            self._searches_in_flight -= 1
        self.searches_served += len(queries)
        return results

    def runs_on_loop(self, n_queries: int, filtered: bool, ef_search: int, force_exact: bool) -> bool:
        """Worth running on the event loop: one or two unfiltered HNSW queries at a modest ef. A huge
        ef_search (or any IVF-PQ nprobe, any scan) could hold the loop, and every other RPC, for long."""
        if n_queries > INLINE_MAX_QUERIES or filtered or force_exact or self.spec.index_kind != "hnsw":
            return False
        return (ef_search or self.state.index.effective_params()["ef_search"]) <= INLINE_MAX_EF

    def _result(self, hits: QueryHits, include_metadata: bool, include_vectors: bool) -> QueryResult:
        metadata = [self.state.fields.get(label) for label in hits.labels.tolist()] if include_metadata else None
        vectors = self.state.vectors_of(hits.labels) if include_vectors else None
        return QueryResult(hits.ids, hits.scores, metadata, vectors, hits.strategy, hits.estimated_cost_us, hits.matches)

    async def get(self, ids: Sequence[str], include_vectors: bool) -> list[tuple[str, Metadata, np.ndarray | None]]:
        def run() -> list[tuple[str, Metadata, np.ndarray | None]]:
            with self._lock.read():
                found = self.state.get(ids)
                vectors = self.state.vectors_of(np.array([label for _, label, _ in found], dtype=np.int64)) if include_vectors else None
                return [(i, md, vectors[n] if vectors is not None else None) for n, (i, _, md) in enumerate(found)]

        return await run_in(self._executors.searches, run)

    async def export(
        self, after_slot: int, limit: int, with_vectors: bool = True,
    ) -> tuple[list[tuple[str, Metadata]], np.ndarray | None, int, bool, int]:
        """Up to `limit` points in slots after `after_slot`, read under the read lock at one point: (ids with
        metadata, their stored vectors (None without `with_vectors`), the last slot looked at, whether no slot
        follows it, the count)."""

        def run() -> tuple[list[tuple[str, Metadata]], np.ndarray | None, int, bool, int]:
            with self._lock.read():
                id_map = self.state.ids
                following = id_map.live_labels(after_slot, limit + 1)  # one more: whether any follows
                chosen = following[:limit]
                points = [(id_map.id_of(label) or "", self.state.fields.get(label)) for label in chosen.tolist()]
                vectors = self.state.vectors_of(chosen) if with_vectors else None
                done = len(following) <= limit
                slot = int(chosen[-1]) if len(chosen) and not done else max(after_slot, id_map.slots - 1)
                return points, vectors, slot, done, self.state.count

        return await run_in(self._executors.searches, run)

    async def digest(self) -> tuple[int, int, int]:
        """(point count, order-independent content digest, last LSN), read under the read lock at one point."""

        def run() -> tuple[int, int, int]:
            with self._lock.read():
                live = [(label, point_id) for point_id, label in self.state.ids.items()]
                vectors = self.state.vectors_of(np.array([label for label, _ in live], dtype=np.int64))
                total = 0
                for (label, point_id), vector in zip(live, vectors):
                    metadata = json.dumps(self.state.fields.get(label), sort_keys=True, default=list).encode()
                    point = hashlib.blake2b(point_id.encode(), digest_size=8)
                    point.update(b"\0" + np.ascontiguousarray(vector, dtype="<f4").tobytes() + metadata)
                    total = (total + int.from_bytes(point.digest(), "little")) % 2**64
                return len(live), total, self._wal.last_lsn

        return await run_in(self._executors.stats, run)

    async def stats(self) -> dict[str, Any]:
        # Off the event loop: the read lock can wait behind a long write (IVF training).
        return await run_in(self._executors.stats, self._stats)

    def _stats(self) -> dict[str, Any]:
        with self._lock.read():
            return {
                "point_count": self.state.count,
                "deleted_count": self.state.ids.free_count,
                "index_memory_bytes": self.state.index.memory_bytes(),
                "metadata_memory_bytes": self.state.fields.memory_bytes() + self.state.ids.memory_bytes(),
                "wal_bytes": self._wal.size_bytes,
                "last_snapshot_unix": self.last_snapshot_unix,
                "last_lsn": self._wal.last_lsn,
                "trained": self.state.index.trained,
                "index_params": self.state.index.effective_params(),
                "searches_served": self.searches_served,
                "list_compactions": self.list_compactions,
                "list_compaction_due": bool(getattr(self.state.index, "wants_compaction", False)),
                "write_state": self.fault.state if self.fault else "ok",
                "write_fault": self.fault.detail if self.fault else "",
            }


@dataclass(frozen=True)
class _Logged:
    """An action's answer: log `record`, apply it, then answer the caller with result(lsn)."""

    record: WalRecord
    result: Callable[[int], Any]
    payload: bytes | None = None  # already encoded (a replicated record, logged byte for byte as received)


@dataclass(frozen=True)
class _LoggedBatch:
    """An action's answer: several records, logged and applied in order; the caller gets the last's result."""

    records: list[_Logged]


def _read_term(directory: Path, storage: Storage) -> int:
    try:
        with storage.open_read(directory / TERM_FILE) as f:
            return int(f.read().decode() or 0)
    except FileNotFoundError:
        return 0


_Piece = tuple[WalRecord, tuple[int, "_Logged"], int, bool]  # (part of a record, its pending entry, lsn, last part)


def _slices(items: list[tuple[tuple[int, _Logged], int]]) -> list[list[_Piece]]:
    """Consecutive groups of about APPLY_SLICE_POINTS points each, in log order: an upsert of more points is
    cut into pieces of at most that many (the caller is answered after its last piece); deletes go whole."""
    groups: list[list[_Piece]] = [[]]
    points = 0
    for entry, lsn in items:
        for piece, last in _pieces(entry[1].record):
            if groups[-1] and points + len(piece.ids) > APPLY_SLICE_POINTS:
                groups.append([])
                points = 0
            groups[-1].append((piece, entry, lsn, last))
            points += len(piece.ids)
    return groups


def _pieces(record: WalRecord) -> list[tuple[WalRecord, bool]]:
    if not isinstance(record, UpsertRecord) or len(record.ids) <= APPLY_SLICE_POINTS:
        return [(record, True)]
    count = len(record.ids)
    size = math.ceil(count / math.ceil(count / APPLY_SLICE_POINTS))  # equal pieces: 33 points go as 17 + 16, not 32 + 1
    return [(UpsertRecord(record.ids[start : start + size], record.vectors[start : start + size],
                          None if record.metadata is None else record.metadata[start : start + size], record.term),
             start + size >= count) for start in range(0, count, size)]


def _scratch_dir(directory: Path, storage: Storage) -> str | None:
    """Where the partition's indexes may keep scratch files (mapped raw vectors, snapshot staging): its own
    directory on the real file system; none on a simulated one (tests), which has no files to map."""
    return str(directory) if storage is OS_STORAGE else None


def _remove_stale_scratch(directory: Path, storage: Storage) -> None:
    """Scratch folders a snapshot was staging through when the process died (the files in them were the
    only unlinked-on-open ones not to go by themselves)."""
    if storage is not OS_STORAGE or not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and entry.name.startswith(STAGING_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


def _apply(state: PartitionState, record: WalRecord) -> None:
    if isinstance(record, UpsertRecord):
        state.upsert(record.ids, record.vectors, record.metadata)
    else:
        state.delete(record.ids)

