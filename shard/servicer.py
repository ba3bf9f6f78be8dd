"""The Shard gRPC service: converts requests to domain values, checks them, and calls the partitions.

Only this module and quiver.wire touch the generated protobuf classes on the shard side.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import numpy as np

from quiver.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, OutOfRange, QuiverError, Unavailable
from quiver.local_calls import LocalContext
from quiver.metrics import observe_rpc
from quiver.rpc_guard import rpc_guard, status_of
from quiver.v1 import shard_pb2, shard_pb2_grpc
from quiver.wire.filters import filter_from_proto, metadata_to_proto
from quiver.wire import search_outcomes
from quiver.wire.packed_hits import HitBatch
from quiver.wire.points import (
    metadata_list_from_proto,
    point_to_proto,
    query_result_to_proto,
    vectors_from_bytes,
)
from quiver.wire.specs import key_from_proto, partition_spec_from_proto, partition_spec_to_proto
from quiver.filters import Metadata
from quiver.specs import PartitionSpec
from shard.admission import Admission
from shard.executors import ShardExecutors, run_in
from shard.config import ShardConfig
from shard.durable_partition import DurablePartition, LogTrimmed, StaleTerm
from shard.write_seals import DEFAULT_TTL_S as DEFAULT_SEAL_TTL_S, WriteSeals
from shard import wal_codec
from shard.snapshot_store import InvalidSnapshot, verify_snapshot_file
from quiver.grpc_server import Undecodable
from shard.indexes import QueryKnobs
from shard.partition_registry import PartitionRegistry
from shard.replication import Replication
from quiver.validation import MAX_STORED_ID_BYTES, check_ids, check_k, prepare_vectors


T = TypeVar("T")
_EXPORT_PAGE = 1024  # points per ExportPoints page unless asked otherwise
_MAX_EXPORT_PAGE = 16384
_LOG_PAGE_BYTES = 1 << 20


class ShardServicer(shard_pb2_grpc.ShardServicer):
    SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"].full_name

    def __init__(self, registry: PartitionRegistry, config: ShardConfig, admission: Admission, executors: ShardExecutors) -> None:
        self.replication: Replication | None = None  # set by ShardServer once it is in a cluster
        self._executors = executors
        self._registry = registry
        self._config = config
        self._admission = admission
        self.slow_rpc_s = config.slow_rpc_s  # read by rpc_guard
        self._seals = WriteSeals()

    async def _off_loop(self, points: int, work: Callable[[], T]) -> T:
        """Decoding and normalising a large request is CPU work: done on a search thread, not the loop."""
        if points > self._config.offload_points:
            return await run_in(self._executors.searches, work)
        return work()

    def _partition(self, ref: shard_pb2.PartitionRef) -> DurablePartition:
        return self._registry.get(key_from_proto(ref))

    @rpc_guard
    async def CreatePartition(self, request, context):  # type: ignore[no-untyped-def]
        created = await self._registry.create(partition_spec_from_proto(request.spec))
        return shard_pb2.CreatePartitionResponse(created=created)

    @rpc_guard
    async def DropPartition(self, request, context):  # type: ignore[no-untyped-def]
        await self._registry.drop(key_from_proto(request.ref))
        return shard_pb2.DropPartitionResponse()

    @rpc_guard
    async def ListPartitions(self, request, context):  # type: ignore[no-untyped-def]
        return shard_pb2.ListPartitionsResponse(partitions=[partition_spec_to_proto(p.spec) for p in self._registry.all()])

    @rpc_guard
    async def Upsert(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        with self._seals.writing(partition.spec.key, request.past_seal), self._admission.write(request.ByteSize()):
            decode = functools.partial(_decode_upsert, request, partition.spec)
            ids, prepared, metadata = await self._off_loop(len(request.ids), decode)
            deadline = _deadline(context)

            async def apply(term: int) -> tuple[int, int]:
                lsn = await partition.upsert(ids, prepared, metadata, deadline=deadline, term=term)
                return lsn, lsn

            lsn = await self._write(partition, request.term, deadline, apply)
        return shard_pb2.UpsertResponse(upserted=len(ids), lsn=lsn)

    async def _write(self, partition: DurablePartition, term: int, deadline: float | None, apply: Callable[[int], Awaitable[tuple[T, int]]]) -> T:
        """A write, through this server's replica group when the partition belongs to one."""
        if self.replication is None:
            if term:
                raise Unavailable(f"partition {partition.spec.key}: this shard server is not in a cluster, so it leads no replica group; retry")
            return (await apply(0))[0]
        return await self.replication.write(partition, term, deadline, apply)

    @rpc_guard
    async def Delete(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        ids = list(request.ids)
        check_ids(ids, allow_duplicates=True, max_bytes=MAX_STORED_ID_BYTES)
        flt = filter_from_proto(request.filter)
        if not ids and flt is None:
            raise InvalidArgument("delete names no ids and no filter; give at least one")
        with self._seals.writing(partition.spec.key, request.past_seal), self._admission.write(request.ByteSize()):
            deadline = _deadline(context)

            async def apply(term: int) -> tuple[tuple[int, int], int]:
                deleted, lsn = await partition.delete(ids, flt, deadline=deadline, term=term)
                return (deleted, lsn), lsn

            deleted, lsn = await self._write(partition, request.term, deadline, apply)
        return shard_pb2.DeleteResponse(deleted=deleted, lsn=lsn)

    @rpc_guard
    async def Replicate(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        entries = [(entry.lsn, entry.payload) for entry in request.entries]
        with self._admission.write(request.ByteSize()):
            last = await partition.append_replicated(entries, request.term, deadline=_deadline(context))
        return shard_pb2.ReplicateResponse(last_lsn=last)

    @rpc_guard
    async def TruncateLog(self, request, context):  # type: ignore[no-untyped-def]
        partition = await self._from_primary(request.ref, request.term, "truncation")
        if request.after_lsn < partition.last_lsn:
            policy = self._registry.durability
            partition = await self._registry.rebuild(
                partition.spec.key, lambda directory: DurablePartition.truncate_files_after(directory, request.after_lsn, policy))
            await self._replication_changed()
        return await _position(partition)

    @rpc_guard
    async def InstallSnapshot(self, request_iterator, context):  # type: ignore[no-untyped-def]
        """A primary's snapshot file, received whole into a staging file, verified, then made this replica's
        whole state (its log and older snapshots go)."""
        partition, staged, lsn = await self._receive_snapshot(request_iterator)
        try:
            try:
                await asyncio.to_thread(verify_snapshot_file, staged, lsn)
            except InvalidSnapshot as error:
                raise InvalidArgument(f"the snapshot received for {partition.spec.key} is damaged: {error}") from None
            policy = self._registry.durability
            partition = await self._registry.rebuild(
                partition.spec.key, lambda directory: DurablePartition.replace_files_with_snapshot(directory, staged, lsn, policy))
            await self._replication_changed()
        finally:
            staged.unlink(missing_ok=True)  # gone already once installed (moved into place)
        return await _position(partition)

    async def _receive_snapshot(self, chunks) -> tuple[DurablePartition, Path, int]:  # type: ignore[no-untyped-def]
        """The streamed file, written to a staging file beside the partition's snapshots (removed on error)."""
        first = await anext(aiter(chunks), None)
        if first is None:
            raise InvalidArgument("InstallSnapshot received no chunks")
        if isinstance(first, Undecodable):
            raise InvalidArgument(first.message)
        partition = await self._from_primary(first.ref, first.term, "a snapshot")
        staged = partition.directory / "snapshots" / f"snapshot-{first.lsn:020d}.qsnap.tmp"
        try:
            with await asyncio.to_thread(open, staged, "wb") as handle:
                await asyncio.to_thread(handle.write, first.data)
                async for chunk in chunks:
                    if isinstance(chunk, Undecodable):
                        raise InvalidArgument(chunk.message)
                    await asyncio.to_thread(handle.write, chunk.data)
                await asyncio.to_thread(_flush_synced, handle)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return partition, staged, first.lsn

    async def _from_primary(self, ref: shard_pb2.PartitionRef, term: int, what: str) -> DurablePartition:
        """The partition a (new) primary asks to change, its term observed; StaleTerm if a newer one began."""
        partition = self._partition(ref)
        await partition.observe_term(term)
        if partition.term > term:
            raise StaleTerm(f"partition {partition.spec.key}: {what} of term {term} arrived, but term {partition.term} has begun")
        return partition

    @rpc_guard
    async def Digest(self, request, context):  # type: ignore[no-untyped-def]
        count, digest, last_lsn = await self._partition(request.ref).digest()
        return shard_pb2.DigestResponse(point_count=count, digest=digest, last_lsn=last_lsn)

    @rpc_guard
    async def ExportPoints(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        # A page's vectors stay within half the message limit (metadata takes the rest); ids alone are small.
        most = _MAX_EXPORT_PAGE if request.ids_only else max(min(_MAX_EXPORT_PAGE, self._config.max_message_bytes // (8 * partition.spec.dim)), 1)
        limit = min(request.limit or _EXPORT_PAGE, most)
        if request.limit > most:
            raise InvalidArgument(f"limit {request.limit} exceeds the largest page of {most} points for dimension {partition.spec.dim}")
        if request.after_slot < -1:
            raise InvalidArgument(f"after_slot must be -1 (from the start) or a slot a previous page returned, got {request.after_slot}")
        points, vectors, last_slot, done, total = await partition.export(request.after_slot, limit, with_vectors=not request.ids_only)
        if request.ids_only:
            return shard_pb2.ExportPointsResponse(ids=[i for i, _ in points], last_slot=last_slot, done=done, total=total)
        return shard_pb2.ExportPointsResponse(
            ids=[i for i, _ in points], vectors=np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
            # None when no point of the page has any: a page of empty messages costs both sides a parse per point.
            metadata=[metadata_to_proto(md) for _, md in points] if any(md for _, md in points) else [],
            last_slot=last_slot, done=done, total=total,
        )

    @rpc_guard
    async def ReadLog(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        max_bytes = min(request.max_bytes or _LOG_PAGE_BYTES, self._config.max_message_bytes // 2)
        term, last_lsn, _ = await partition.log_position()
        if request.after_lsn > last_lsn:
            raise OutOfRange(f"after_lsn {request.after_lsn} is past the end of partition {partition.spec.key}'s log (lsn {last_lsn})")
        try:
            entries = await asyncio.to_thread(partition.read_log, request.after_lsn, max_bytes)
        except LogTrimmed as error:
            raise FailedPrecondition(
                f"the log of partition {partition.spec.key} no longer holds the records after lsn {request.after_lsn} "
                f"(a snapshot trimmed it: {error}); start again from an export"
            ) from None
        return shard_pb2.ReadLogResponse(writes=[_logged_write(lsn, payload) for lsn, payload in entries], last_lsn=last_lsn, term=term)

    @rpc_guard
    async def SealWrites(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        key = partition.spec.key
        if not request.sealed:
            self._seals.lift(key)
        else:
            if request.ttl_s < 0:
                raise InvalidArgument(f"ttl_s must be positive (or 0 for {DEFAULT_SEAL_TTL_S:g} s), got {request.ttl_s}")
            self._seals.seal(key, request.reason or "it is being cut over to another index version", request.ttl_s or DEFAULT_SEAL_TTL_S)
            # Writes that passed the seal before it was set finish first, so the LSN answered covers every
            # write this partition acknowledges (the commit loop is in order: the position is read after them).
            await self._seals.drained(key, _deadline(context))
        term, last_lsn, _ = await partition.log_position()
        return shard_pb2.SealWritesResponse(last_lsn=last_lsn, term=term)

    async def _replication_changed(self) -> None:
        if self.replication is not None:
            await self.replication.sync()

    @rpc_guard
    async def ReplicaStatus(self, request, context):  # type: ignore[no-untyped-def]
        return await _position(self._partition(request.ref), request.term)

    @rpc_guard
    async def Get(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        found = await partition.get(list(request.ids), request.include_vectors)
        return shard_pb2.GetResponse(points=[point_to_proto(i, md, vec) for i, md, vec in found])

    @rpc_guard
    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        return await self._search(request, context, None)

    @rpc_guard
    async def SearchMany(self, request, context):  # type: ignore[no-untyped-def]
        results = await self._each_search(list(request.searches), context, one_at_a_time=False)
        return shard_pb2.SearchManyResponse(outcomes=[
            search_outcomes.refused(*status_of(r, "SearchMany")) if isinstance(r, Exception) else search_outcomes.answered(r) for r in results
        ])

    async def search_in_process(self, searches: list[shard_pb2.SearchRequest], timeout: float | None) -> list[shard_pb2.SearchResponse | Exception]:
        """What a SearchMany of `searches` answers, called directly by a router in this very process (node
        mode, router/local_searches.py): each search's response, or the error it was refused with.

        No RPC, no per-search task, no outcome messages: one search after another on the caller's task
        (inline searches do not suspend at all; an HNSW batch uses every core by itself), the queries decoded
        once. Searches that need threads to run side by side (filters, scans) run at once, as SearchMany's do.
        Counted in the RPC metrics as the method `SearchInProcess`."""
        started = time.perf_counter()
        context = LocalContext(None, None if timeout is None else time.monotonic() + timeout)
        code = "OK"
        try:
            return await self._each_search(searches, context, len(searches) == 1 or all(self._one_at_a_time(s) for s in searches))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            observe_rpc(self.SERVICE, "SearchInProcess", code, time.perf_counter() - started)

    async def _each_search(
        self, searches: list[shard_pb2.SearchRequest], context, one_at_a_time: bool  # type: ignore[no-untyped-def]
    ) -> list[shard_pb2.SearchResponse | Exception]:
        """Each search's response, or the error it alone was refused with (as rpc_guard would refuse a lone
        Search); the queries they share are decoded and normalised once per metric. `one_at_a_time`: each
        search runs after the one before, else all at once."""
        prepared: list[tuple[bytes, int, str, asyncio.Future[np.ndarray]]] = []

        async def outcome(search: shard_pb2.SearchRequest, concurrent: bool) -> shard_pb2.SearchResponse | Exception:
            try:
                return await self._search(search, context, prepared, concurrent)
            except Exception as error:  # noqa: BLE001 - each search is refused on its own
                return error

        if one_at_a_time:
            return [await outcome(s, False) for s in searches]
        return list(await asyncio.gather(*(outcome(s, True) for s in searches)))

    def _one_at_a_time(self, search: shard_pb2.SearchRequest) -> bool:
        """Whether running `search` before the next one costs no parallelism: an unfiltered HNSW search that
        runs on the event loop (no thread at all), or one that hnswlib spreads over every core itself (three
        such batches at once measured 5-10% slower than one after another: 6 threads on 2 cores)."""
        try:
            partition = self._partition(search.ref)
        except QuiverError:
            return True  # refused at once
        if search.filter.WhichOneof("kind") is not None or search.params.exact or partition.spec.index_kind != "hnsw":
            return False
        if self._executors.sizes.searches == 0:  # not capped to fewer threads than cores
            return True
        return partition.runs_on_loop(len(search.queries) // (4 * partition.spec.dim), False, search.params.ef_search, False)

    async def _search(
        self, request: shard_pb2.SearchRequest, context, shared: list[tuple[bytes, int, str, asyncio.Future[np.ndarray]]] | None,  # type: ignore[no-untyped-def]
        concurrent: bool = True,
    ) -> shard_pb2.SearchResponse:
        """One partition's search; `shared`: the queries already prepared for other searches of the same call
        (`concurrent`: whether those run at the same time as this one, so a preparation must be shared as a task)."""
        partition = self._partition(request.ref)
        spec = partition.spec
        check_k(request.k, self._config.max_k)
        if request.packed_hits and (request.include_metadata or request.include_vectors):
            raise InvalidArgument("packed_hits carries ids and scores only: search without it to get metadata or vectors")
        if shared is None:
            prepared = await self._prepare_queries(request.queries, spec)
        else:
            # Compared, not hashed: hashing a large batch's bytes would cost the loop more than one comparison.
            # A task, so that searches running at once wait on the one preparation instead of repeating it.
            task = next((t for q, d, m, t in shared if d == spec.dim and m == spec.metric and q == request.queries), None)
            if task is None and not concurrent:  # nothing else runs meanwhile: prepared here, kept as a done future
                task = asyncio.get_running_loop().create_future()
                task.set_result(await self._prepare_queries(request.queries, spec))
                shared.append((request.queries, spec.dim, spec.metric, task))
            elif task is None:
                task = asyncio.ensure_future(self._prepare_queries(request.queries, spec))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # read, even if every waiter left
                shared.append((request.queries, spec.dim, spec.metric, task))
            # One search's cancellation must not cancel the others' preparation; a done one is read at once.
            prepared = task.result() if task.done() else await asyncio.shield(task)
        flt = filter_from_proto(request.filter)
        knobs = QueryKnobs(ef_search=request.params.ef_search, nprobe=request.params.nprobe)
        _deadline(context)
        with self._admission.search(len(prepared)):
            results = await partition.search(
                prepared, request.k, flt, knobs, request.params.exact, request.include_metadata, request.include_vectors, packed=request.packed_hits
            )
        if isinstance(results, HitBatch):
            return shard_pb2.SearchResponse(hits=results.to_proto())
        return shard_pb2.SearchResponse(
            results=[query_result_to_proto(r.ids, r.scores, r.metadata, r.vectors, r.strategy, r.estimated_cost_us, r.filter_matches) for r in results]
        )

    async def _prepare_queries(self, data: bytes, spec: PartitionSpec) -> np.ndarray:
        queries = vectors_from_bytes(data, spec.dim, None, "queries")
        if len(queries) == 0:
            raise InvalidArgument("search carries no query vectors")
        if len(queries) > self._config.max_queries_per_request:
            raise InvalidArgument(f"{len(queries)} queries in one request; the maximum is {self._config.max_queries_per_request}")
        return await self._off_loop(len(queries), functools.partial(prepare_vectors, queries, spec.metric, "queries"))

    @rpc_guard
    async def Train(self, request, context):  # type: ignore[no-untyped-def]
        partition = self._partition(request.ref)
        sample = None
        if request.vectors:
            sample = prepare_vectors(vectors_from_bytes(request.vectors, partition.spec.dim, None, "vectors"), partition.spec.metric)
        return shard_pb2.TrainResponse(trained_on=await partition.train(sample))

    @rpc_guard
    async def Snapshot(self, request, context):  # type: ignore[no-untyped-def]
        return shard_pb2.SnapshotResponse(lsn=await self._partition(request.ref).snapshot())

    @rpc_guard
    async def Stats(self, request, context):  # type: ignore[no-untyped-def]
        partitions = [self._partition(request.ref)] if request.ref.collection else self._registry.all()
        return shard_pb2.StatsResponse(partitions=[_stats_to_proto(p, await p.stats()) for p in partitions])


def _decode_upsert(request: shard_pb2.UpsertRequest, spec: PartitionSpec) -> tuple[list[str], np.ndarray, list[Metadata] | None]:
    ids = list(request.ids)
    if not ids:
        raise InvalidArgument("upsert carries no ids")
    check_ids(ids, max_bytes=MAX_STORED_ID_BYTES)
    vectors = vectors_from_bytes(request.vectors, spec.dim, len(ids), "vectors")
    prepared = prepare_vectors(vectors, spec.metric)
    return ids, prepared, metadata_list_from_proto(request.metadata, len(ids))


def _flush_synced(handle) -> None:  # type: ignore[no-untyped-def]
    handle.flush()
    os.fsync(handle.fileno())


async def _position(partition: DurablePartition, term: int = 0) -> shard_pb2.ReplicaStatusResponse:
    term, last_lsn, last_term = await partition.log_position(term)
    return shard_pb2.ReplicaStatusResponse(term=term, last_lsn=last_lsn, last_term=last_term)


def _logged_write(lsn: int, payload: bytes) -> shard_pb2.LoggedWrite:
    record = wal_codec.decode(payload)
    if isinstance(record, wal_codec.DeleteRecord):
        return shard_pb2.LoggedWrite(lsn=lsn, delete=True, ids=record.ids)
    return shard_pb2.LoggedWrite(
        lsn=lsn, ids=record.ids, vectors=np.ascontiguousarray(record.vectors, dtype="<f4").tobytes(),
        metadata=[metadata_to_proto(md) for md in record.metadata] if record.metadata is not None else [],
    )


def _deadline(context) -> float | None:  # type: ignore[no-untyped-def]
    """The caller's deadline as a monotonic time; DeadlineExceeded if it has passed already, so work that
    nobody waits for is never started."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise DeadlineExceeded("the caller's deadline passed before this shard server started the request; nothing was done")
    return time.monotonic() + remaining


def _stats_to_proto(partition: DurablePartition, stats: dict) -> shard_pb2.PartitionStats:  # type: ignore[type-arg]
    params = stats.pop("index_params")
    return shard_pb2.PartitionStats(
        spec=partition_spec_to_proto(partition.spec), index_params_json=json.dumps(params, sort_keys=True), **stats
    )


