"""The Router gRPC service: Quiver's public data plane and admin API.

Writes are checked whole at the router, then split by shard (jump hash of the point id, or of the
partition_key) and sent to each shard's primary, which replicates them (shard/replication.py). Searches pass the caller's packed query bytes and
filter through untouched to the shards (one shard with a partition_key, else all), under the caller's
deadline, and merge the per-shard top-k. Get and delete by id ask every shard (or the key's shard): ids
are found wherever an earlier partition-keyed write put them.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import grpc
import numpy as np

from quiver.admission import InFlightBudget
from quiver.control_plane.records import ShardMap
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import DeadlineExceeded, InvalidArgument, NotFound, QuiverError, ResourceExhausted, SealedAgainstWrites, Unavailable
from quiver.logs import REQUEST_ID, outgoing_metadata
from quiver.metrics import PARTIAL_RESULTS, SEARCH_ADMISSION_SHARE, SHARD_CALL_SECONDS, refused, timed_call
from quiver.rpc_guard import rpc_guard
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, types_pb2
from quiver.validation import check_ids, check_k, check_vectors
from quiver.wire.filters import filter_from_proto
from quiver.wire.packed_hits import HitBatch
from quiver.wire.points import metadata_list_from_proto, vectors_from_bytes
from quiver.wire.specs import index_from_proto
from router.admin import Admin, Budget
from router.admission_share import AdmissionShare
from router.backpressure import Backpressure
from router.batch_cost import BatchCostModel
from router.collection_view import CollectionView, check_model, collection_view
from router.catch_up import SnapshotCatchUp
from router.coalescer import Coalescer
from router.config import RouterConfig
from router.fanout import Gather, Outcome, fan_out, raise_caller_errors, require_coverage
from router.hashring import shard_for_key, shards_for_keys
from router.merge import merge_hit_batches, merge_results_batch
from router.partition_keys import caller_id, check_key, key_filter, stored_id, with_key
from router.local_searches import LocalSearches
from router.server_searches import ServerSearches
from router.replica_reads import HedgePolicy, ReplicaReads
from router.model_coverage import ModelCoverage
from router.reindex_progress import progress_message
from router.version_admin import VersionAdmin
from quiver.shard_channels import ShardPool

T = TypeVar("T")


# Deadline-aware admission refuses on an estimate only once it rests on a few batches: the first batch
# after a start or a quiet spell is often the slow one (connections opening, a replica failing over).
MIN_BATCHES_TO_REFUSE = 3

class RouterServicer(router_pb2_grpc.RouterServicer):
    SERVICE = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name

    def __init__(self, config: RouterConfig, watcher: ClusterWatcher, pool: ShardPool, admin: Admin) -> None:
        self._config = config
        self.slow_rpc_s = config.slow_rpc_s  # read by rpc_guard
        self._watcher = watcher
        self._catch_up = SnapshotCatchUp(watcher, admin.store.last_change_revision)
        self._pool = pool
        self._admin = admin
        self._versions = VersionAdmin(admin)
        self._coverage = ModelCoverage(pool)
        # Concurrent searches to one shard server go as one SearchMany (router/server_searches.py).
        self.server_searches = ServerSearches(pool.stub) if config.batch_server_searches else None
        self.replica_reads = ReplicaReads(HedgePolicy() if config.hedge_reads else HedgePolicy(hedge_ratio=0.0))
        # Node mode: the partitions of the shard server in this process, searched by one direct call.
        self.local_searches: LocalSearches | None = None
        self._coalescer: Coalescer[_SearchJob] = Coalescer(
            self._search_batch, fits=self._batch_fits, expired=self._search_expired
        )
        self._write_bytes = InFlightBudget(config.max_queued_write_bytes, "router_queued_write_bytes")
        self.backpressure = Backpressure(config.max_pushback_hold_s)
        # Per collection: a batch's time to its shards' answers by its queries (`router.batch_cost`).
        self._batch_costs: dict[str, BatchCostModel] = {}
        # Per coalescing key: when its batch in flight was sent, and how long it was expected to take.
        self._in_flight: dict[Any, tuple[float, float]] = {}
        self._background: set[asyncio.Task[None]] = set()  # writes' shard calls outliving their refused request
        self.admission_share = AdmissionShare(initial=config.deadline_admission_share, ceiling=min(1.0, max(config.deadline_admission_share, 0.9)))
        # CPU work of large requests (checking and splitting a big upsert, merging a big search batch) runs
        # here, not on the event loop, so one large request cannot stall every other RPC of the router.
        self._cpu = ThreadPoolExecutor(self._config.cpu_threads, thread_name_prefix="router-cpu")

    def search_in_process(self, address: str, servicer: Any) -> None:
        """Searches of partitions that `servicer` (the shard server at `address`, in this process) holds go
        straight to it (router/local_searches.py), unless the config turns that off."""
        if self._config.search_in_process:
            self.local_searches = LocalSearches(address, servicer, self.replica_reads)

    def close(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)
        if self.server_searches is not None:
            self.server_searches.close()
        for task in list(self._background):
            task.cancel()

    @property
    def queued_write_bytes(self) -> int:
        """Bytes of upserts admitted and not yet answered by every shard (refused ones' other parts included)."""
        return self._write_bytes.used

    @property
    def queued_searches(self) -> int:
        """Searches waiting to join the next shard request of their kind."""
        return self._coalescer.queued

    async def _view(
        self, name: str, version: int = 0, *, write: bool = False, model: str = "", budget_s: float | None = None,
    ) -> CollectionView:
        try:
            return collection_view(self._watcher.current, name, version, write=write, model=model)
        except NotFound:
            # Perhaps created through another router a moment ago: look again once this snapshot has caught up.
            if not await self._catch_up.catch_up(budget_s):
                raise
            return collection_view(self._watcher.current, name, version, write=write, model=model)

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        """The shards' budget: the caller's deadline less a margin, so a partial answer gets back in time."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._config.default_timeout_s
        return max(remaining * 0.9 - 0.02, 0.0)

    def _ref(self, view: CollectionView, shard: int) -> shard_pb2.PartitionRef:
        return shard_pb2.PartitionRef(collection=view.record.name, shard=shard, version=view.version)

    def _target_shards(self, view: CollectionView, partition_key: str) -> list[int]:
        if partition_key:
            return [shard_for_key(partition_key, view.record.shards)]
        return list(range(view.record.shards))

    # -- admin --------------------------------------------------------------------------------------

    @rpc_guard
    async def CreateCollection(self, request, context):  # type: ignore[no-untyped-def]
        budget = Budget(context.time_remaining())
        return router_pb2.CreateCollectionResponse(collection=await self._admin.create_collection(request.spec, budget))

    @rpc_guard
    async def DescribeCollection(self, request, context):  # type: ignore[no-untyped-def]
        snapshot = self._watcher.current
        record = snapshot.collections.get(snapshot.resolve(request.name))
        if record is None:
            record = await self._admin.get_collection(request.name)
        return router_pb2.DescribeCollectionResponse(collection=self._admin.info(record))

    @rpc_guard
    async def ListCollections(self, request, context):  # type: ignore[no-untyped-def]
        records = sorted(self._watcher.current.collections.values(), key=lambda r: r.name)
        return router_pb2.ListCollectionsResponse(collections=[self._admin.info(r) for r in records])

    @rpc_guard
    async def DropCollection(self, request, context):  # type: ignore[no-untyped-def]
        await self._admin.drop_collection(request.name, Budget(context.time_remaining()))
        return router_pb2.DropCollectionResponse()

    @rpc_guard
    async def ClusterStatus(self, request, context):  # type: ignore[no-untyped-def]
        status = await self._admin.cluster_status()
        status.reindexes.extend(await self._reindexes())
        status.model_coverage.extend(self._coverage.report(self._watcher.current))
        return status

    async def _reindexes(self, collection: str = "") -> list[router_pb2.ReindexProgress]:
        """The builds this router runs, then those other routers publish."""
        board = self._versions.board
        return [progress_message(b, board.reported_by) for b in self._versions.builds(collection)] + await board.others(collection)

    def identify(self, router_id: str) -> None:
        """The name this router's published reindex progress carries (known once its port is bound)."""
        self._versions.board.reported_by = router_id

    @rpc_guard
    async def Reindex(self, request, context):  # type: ignore[no-untyped-def]
        index = index_from_proto(request.index) if request.HasField("index") else None
        build = await self._versions.reindex(
            request.collection, index, request.shards, request.replication_factor, Budget(context.time_remaining()), request.model,
        )
        if isinstance(build, router_pb2.ReindexProgress):  # built by another router, which published this
            return build
        if isinstance(build, ShardMap):  # a version opened for a new model's writes: nothing to build
            return router_pb2.ReindexProgress(
                collection=build.collection, source_version=self._watcher.current.collections[build.collection].active_version,
                version=build.version, state=build.state,
            )
        return progress_message(build, self._versions.board.reported_by)

    @rpc_guard
    async def ReindexStatus(self, request, context):  # type: ignore[no-untyped-def]
        if request.collection:
            self._view_record(request.collection)
        return router_pb2.ReindexStatusResponse(builds=await self._reindexes(request.collection))

    @rpc_guard
    async def RecordVerification(self, request, context):  # type: ignore[no-untyped-def]
        await self._versions.record_verification(request.collection, request.figures)
        return router_pb2.RecordVerificationResponse()

    @rpc_guard
    async def SetAlias(self, request, context):  # type: ignore[no-untyped-def]
        expected = "" if request.expect_absent else (request.expected_collection or None)
        revision = await self._admin.store.set_alias(request.alias, request.collection, expected=expected)
        await self._admin.seen(revision, Budget(context.time_remaining()))  # this router routes by it on return
        return router_pb2.SetAliasResponse(revision=revision)

    @rpc_guard
    async def DeleteAlias(self, request, context):  # type: ignore[no-untyped-def]
        revision = await self._admin.store.delete_alias(request.alias, expected=request.expected_collection or None)
        await self._admin.seen(revision, Budget(context.time_remaining()))
        return router_pb2.DeleteAliasResponse()

    @rpc_guard
    async def ListAliases(self, request, context):  # type: ignore[no-untyped-def]
        aliases = sorted(self._watcher.current.aliases.items())
        return router_pb2.ListAliasesResponse(aliases=[router_pb2.Alias(alias=a, collection=c) for a, c in aliases])

    def _view_record(self, name: str) -> None:
        if name not in self._watcher.current.collections:
            raise NotFound(f"collection {name!r} does not exist")

    async def stop_builds(self) -> None:
        await self._versions.close()
        await self._coverage.close()

    @rpc_guard
    async def DrainServer(self, request, context):  # type: ignore[no-untyped-def]
        left = await self._admin.drain_server(request.server_id, request.cancel, Budget(context.time_remaining()))
        return router_pb2.DrainServerResponse(replicas_left=left)

    # -- index versions -----------------------------------------------------------------------------

    @rpc_guard
    async def ListVersions(self, request, context):  # type: ignore[no-untyped-def]
        return await self._versions.list_versions(request.collection)

    @rpc_guard
    async def Cutover(self, request, context):  # type: ignore[no-untyped-def]
        record = await self._versions.cutover(
            request.collection, request.expected_active, request.target, request.force, Budget(context.time_remaining()),
        )
        return router_pb2.CutoverResponse(active=record.active_version, previous=record.previous_version or 0)

    @rpc_guard
    async def Rollback(self, request, context):  # type: ignore[no-untyped-def]
        record = await self._versions.rollback(request.collection, request.expected_active, request.force, Budget(context.time_remaining()))
        return router_pb2.CutoverResponse(active=record.active_version, previous=record.previous_version or 0)

    @rpc_guard
    async def RetireVersion(self, request, context):  # type: ignore[no-untyped-def]
        await self._versions.retire(request.collection, request.version, Budget(context.time_remaining()))
        return router_pb2.RetireVersionResponse()

    # -- writes -------------------------------------------------------------------------------------

    @rpc_guard
    async def Upsert(self, request, context):  # type: ignore[no-untyped-def]
        view = await self._view(request.collection, request.version, write=True, model=request.model, budget_s=context.time_remaining())
        check_model(view, request.model)
        check_key(view.record.name, view.record.partition_key_field, request.partition_key, "write", required=True)
        if request.partition_key or len(request.ids) > self._config.offload_points:
            # Before the costly split: a keyed batch goes to one known shard, and a large one to every shard
            # (or so nearly every one that refusing it whole costs less than splitting it first).
            self._refuse_if_pushed_back(view, self._target_shards(view, request.partition_key))
        size = request.ByteSize()
        with self._write_bytes.hold(size, lambda: (
            f"the router is overloaded with writes: {self._write_bytes.used} bytes of upserts wait for the shards "
            f"and this one ({size} bytes) would pass the budget of {self._write_bytes.budget}; retry after a "
            "pause, or send smaller batches"), self._config.retry_after_s):
            return await self._through_cutover(view, request.version, request.model, context, lambda v: self._upsert(request, context, v, size))

    async def _through_cutover(
        self, view: CollectionView, pinned: int, model: str, context: Any, write: Callable[[CollectionView], Awaitable[T]],
    ) -> T:
        """A write, sent again when the version it went to was sealed for a switch (the sealed shards applied
        nothing, and upserts and deletes are idempotent, so resending all of it is safe): on the new version
        once the switch is in this router's watch, or on the same one if the seal is lifted (a cutover that
        failed), until the caller's deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout(context)
        while True:
            try:
                return await write(view)
            except _SealedForCutover as sealed:
                old = view.version
                left = deadline - loop.time()
                if left <= 0:
                    raise Unavailable(f"{sealed}; the switch did not finish within this call's deadline; nothing was applied on the sealed shards; retry") from None
                with contextlib.suppress(TimeoutError):
                    await self._watcher.wait_for(
                        lambda s: (r := s.collections.get(view.record.name)) is None or r.active_version != old, timeout=min(left, _SEALED_RECHECK_S),
                    )
                view = await self._view(view.record.name, pinned, write=True, model=model)  # resolved as the request was

    async def _upsert(self, request: Any, context: Any, view: CollectionView, size: int) -> router_pb2.RouterUpsertResponse:
        # Checking, normalising-to-check and splitting a large batch is CPU work: off the event loop.
        split = functools.partial(_split_upsert, request, view, self._ref)
        if len(request.ids) > self._config.offload_points:
            by_shard = await asyncio.get_running_loop().run_in_executor(self._cpu, split)
        else:
            by_shard = split()
        self._refuse_if_pushed_back(view, by_shard)
        # Each shard's primary orders the write, replicates it to the in-sync replicas and answers once they
        # all hold it; the term is the primary's as this router's map has it (a deposed one refuses).
        calls: dict[int, Any] = {}
        addresses: dict[int, str] = {}
        timeout = self._timeout(context)
        for shard, sub in by_shard.items():
            address, sub.term = view.primary(shard)
            addresses[shard] = address
            calls[shard] = self._bind(address, "Upsert", sub, timeout)
        # A shard that refuses for overload answers at once; the caller hears of it at once too, not after
        # the other shards' commits (hundreds of ms under load). Their parts go on in the background, their
        # bytes still counted against the write budget; the caller resends the whole batch (idempotent).
        gather = Gather(calls)
        try:
            outcomes = await gather.wait(timeout, until=lambda o: o.code == grpc.StatusCode.RESOURCE_EXHAUSTED)
        except BaseException:
            gather.cancel()
            raise
        if gather.finished:
            gather.cancel()
        else:
            release = self._write_bytes.keep(size)
            task = asyncio.get_running_loop().create_task(_finish_in_background(gather, timeout, release))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for outcome in outcomes:
            if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.backpressure.refused(addresses[outcome.shard], outcome.retry_after_s)
                if len(outcomes) > 1:
                    raise ResourceExhausted(
                        f"shard {outcome.shard}: {outcome.message}; the batch's parts for other shards may have been "
                        "applied: resend all of it (upserts are idempotent)",
                        retry_after_s=outcome.retry_after_s,
                    )
        _raise_if_sealed(view, outcomes)
        raise_caller_errors(outcomes)
        require_coverage(outcomes, False, f"upsert into {view.record.name!r} (safe to retry: upserts are idempotent)")
        return router_pb2.RouterUpsertResponse(upserted=len(request.ids))

    def _refuse_if_pushed_back(self, view: CollectionView, shards: Any) -> None:
        """Refuses a write at once when a server it would go to refused one for overload moments ago."""
        held = self.backpressure.holding(view.primary(shard)[0] for shard in shards)
        if held is not None:
            address, left_s = held
            refused("router_shard_backpressure")
            raise ResourceExhausted(
                f"shard server {address} of collection {view.record.name!r} is overloaded with writes: it refused one "
                f"and asked for a pause, {left_s * 1e3:.0f} ms more; nothing of this upsert was applied; retry after it",
                retry_after_s=left_s,
            )

    def _ask_shard(self, address: str, method: str, message: Any, timeout: float, metadata: Any) -> Any:
        """One timed call to one shard server (the per-server latency histogram), carrying the request ids."""
        if method == "Search" and self.server_searches is not None:
            return self.server_searches.search(address, message, timeout, metadata)
        stub = self._pool.stub(address)
        return timed_call(SHARD_CALL_SECONDS, (method, address), lambda: getattr(stub, method)(message, timeout=timeout, metadata=metadata))

    def _bind(self, address: str, method: str, message: Any, timeout: float) -> Any:
        metadata = outgoing_metadata()  # this request's id, passed on to the shard
        return lambda: self._ask_shard(address, method, message, timeout, metadata)

    def _replicated(
        self,
        view: CollectionView,
        shard: int,
        method: str,
        message: Any,
        timeout: float,
        request_ids: list[str] | None = None,
        first_due: float | None = None,
        replicas: list[str] | None = None,
    ) -> Any:
        """A read sent to the replica expected to answer first, hedged and failed over (see replica_reads);
        `replicas`: the ones to choose from, if not every readable replica of the shard."""
        metadata = outgoing_metadata(request_ids)
        return lambda: self.replica_reads.call(
            view.replicas(shard) if replicas is None else replicas, lambda address, budget: self._ask_shard(address, method, message, budget, metadata), timeout, first_due
        )

    @rpc_guard
    async def Delete(self, request, context):  # type: ignore[no-untyped-def]
        view = await self._view(request.collection, request.version, write=True, budget_s=context.time_remaining())
        ids = list(request.ids)
        check_ids(ids, allow_duplicates=True)
        if not ids and filter_from_proto(request.filter) is None:
            raise InvalidArgument("delete names no ids and no filter; give at least one")
        field, key = view.record.partition_key_field, request.partition_key
        check_key(view.record.name, field, key, "delete", required=True)
        flt = request.filter
        if field:
            ids = [stored_id(key, i) for i in ids]
            if flt.WhichOneof("kind") is not None:
                flt = key_filter(field, key, flt)
        async def delete(view: CollectionView) -> router_pb2.RouterDeleteResponse:
            timeout = self._timeout(context)  # what is left of the caller's deadline, at each resend
            calls: dict[int, Any] = {}
            for shard in self._target_shards(view, request.partition_key):
                address, term = view.primary(shard)
                sub = shard_pb2.DeleteRequest(ref=self._ref(view, shard), ids=ids, filter=flt, term=term)
                calls[shard] = self._bind(address, "Delete", sub, timeout)
            outcomes = await fan_out(calls, timeout)
            _raise_if_sealed(view, outcomes)
            raise_caller_errors(outcomes)
            require_coverage(outcomes, False, f"delete from {view.record.name!r} (safe to retry)")
            counted = {outcome.shard: outcome.value.deleted for outcome in outcomes}  # type: ignore[union-attr]
            return router_pb2.RouterDeleteResponse(deleted=sum(counted.values()))

        return await self._through_cutover(view, request.version, "", context, delete)

    # -- reads --------------------------------------------------------------------------------------

    @rpc_guard
    async def Get(self, request, context):  # type: ignore[no-untyped-def]
        view = await self._view(request.collection, request.version, budget_s=context.time_remaining())
        ids = list(request.ids)
        check_ids(ids, allow_duplicates=True)
        field, key = view.record.partition_key_field, request.partition_key
        check_key(view.record.name, field, key, "get", required=True)
        asked = [stored_id(key, i) for i in ids] if field else ids
        timeout = self._timeout(context)
        calls = {
            shard: self._replicated(
                view, shard, "Get", shard_pb2.GetRequest(ref=self._ref(view, shard), ids=asked, include_vectors=request.include_vectors), timeout
            )
            for shard in self._target_shards(view, request.partition_key)
        }
        outcomes = await fan_out(calls, timeout)
        raise_caller_errors(outcomes)
        require_coverage(outcomes, False, f"get from {view.record.name!r}")
        found = {p.id: p for o in outcomes for p in o.value.points}  # type: ignore[union-attr]
        points = [found[a] for a in dict.fromkeys(asked) if a in found]
        if field:
            for point in points:
                point.id = caller_id(point.id)
        return router_pb2.RouterGetResponse(points=points)

    @rpc_guard
    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        view = await self._view(request.collection, request.version, model=request.model, budget_s=context.time_remaining())
        check_model(view, request.model)
        queries = vectors_from_bytes(request.queries, view.record.dim, None, "queries")
        if len(queries) == 0:
            raise InvalidArgument("search carries no query vectors")
        if len(queries) > self._config.max_queries_per_request:
            raise InvalidArgument(f"{len(queries)} queries in one request; the maximum is {self._config.max_queries_per_request}")
        check_k(request.k, self._config.max_k)
        check_key(view.record.name, view.record.partition_key_field, request.partition_key, "search", required=False)
        check_vectors(queries, view.record.metric, "queries")
        if request.packed_hits and (request.include_metadata or request.include_vectors):
            raise InvalidArgument("packed_hits carries ids and scores only: search without it to get metadata or vectors")
        filter_from_proto(request.filter)  # refuse a malformed filter here, once, not once per shard
        key = (
            view.record.name,
            view.version,
            request.k,
            request.filter.SerializeToString(deterministic=True),
            request.params.SerializeToString(deterministic=True),
            request.include_metadata,
            request.include_vectors,
            request.partition_key,
            request.allow_partial,
        )
        budget = self._timeout(context)
        deadline = asyncio.get_running_loop().time() + budget
        expected = self._expected_answer_s(key, view.record.name, len(queries), budget) if self._config.deadline_admission else None
        share = self.admission_share.value
        if expected is not None and expected > budget * share:
            # Deadline-aware admission: behind this queue the answer would come after the caller stopped
            # waiting, so the work would be wasted and would push every later search past its deadline too.
            refused("router_search_deadline")
            raise ResourceExhausted(
                f"the router is overloaded: searches of {view.record.name!r} are answered in about "
                f"{expected * 1e3:.0f} ms now, more than the {share:.0%} of this search's {budget * 1e3:.0f} ms "
                "budget that would leave it safely in time; retry after a pause, with a longer deadline, or on "
                "another router",
                retry_after_s=max(self._config.retry_after_s, expected - budget * share),
            )
        if self._coalescer.queued >= self._config.max_queued_searches:
            # Overloaded: a queue this long only grows until every caller's deadline passes; say so now.
            refused("router_queued_searches")
            raise ResourceExhausted(
                f"the router is overloaded: {self._coalescer.queued} searches are queued for the shards (the "
                f"budget is {self._config.max_queued_searches}); retry after a pause or on another router",
                retry_after_s=self._config.retry_after_s,
            )
        job = _SearchJob(view, request, len(queries), deadline, REQUEST_ID.get())
        if not self._config.deadline_admission:
            return await self._coalescer.submit(key, job)
        try:
            answer = await self._coalescer.submit(key, job)
        except (DeadlineExceeded, Unavailable, asyncio.CancelledError) as error:
            now = asyncio.get_running_loop().time()
            # A shard that is down fails searches at once, and a caller may leave early: neither says anything
            # about the queue's timing. Cancelled past the deadline: still queued when the caller's deadline
            # ended the call, a miss too.
            late = now >= deadline - (0.01 if isinstance(error, Unavailable) else 0.0)
            if isinstance(error, DeadlineExceeded) or late:
                self.admission_share.missed(now)
                SEARCH_ADMISSION_SHARE.set(self.admission_share.value)
            raise
        self.admission_share.answered()
        SEARCH_ADMISSION_SHARE.set(self.admission_share.value)
        return answer

    def _predict_batch_s(self, collection: str, n_queries: int) -> float | None:
        model = self._batch_costs.get(collection)
        return model.predict(n_queries, asyncio.get_running_loop().time()) if model is not None else None

    def _expected_answer_s(self, key: Any, collection: str, n_queries: int, budget_s: float) -> float | None:
        """When a search of `key` sent now would be answered: what is left of the batch in flight, then the
        batches the queue ahead of it and its own queries make, formed as the coalescer will form them (up
        to the query cap, and no longer than their earliest member's deadline allows), each priced by its
        queries."""
        busy, queued = self._coalescer.backlog(key)
        if not busy:
            return None  # sent at once (and measured again), never refused on an estimate
        model = self._batch_costs.get(collection)
        now = asyncio.get_running_loop().time()
        coefficients = model.coefficients() if model is not None and model.fresh(now) else None
        if model is None or coefficients is None or model.batches < MIN_BATCHES_TO_REFUSE:
            return None
        fixed, per_query = coefficients  # fitted once: the simulation below prices every batch it forms
        sent, expected = self._in_flight.get(key, (0.0, 0.0))
        clock = now + max(0.0, sent + expected - now)
        ahead = [(j.n_queries, j.deadline) for j in queued] + [(n_queries, now + budget_s)]
        while ahead:
            size, due = ahead[0]
            if due <= clock:  # its deadline will have passed by then: dropped unsent, it costs nothing
                ahead = ahead[1:]
                continue
            take = 1
            while take < len(ahead) and take < self._coalescer.max_batch:
                size_next, due_next = size + ahead[take][0], min(due, ahead[take][1])
                if size_next > self._config.max_batch_queries or clock + fixed + per_query * size_next > due_next:
                    break
                size, due, take = size_next, due_next, take + 1
            clock += fixed + per_query * size
            ahead = ahead[take:]
        return clock - now

    def _record_batch_time(self, collection: str, n_queries: int, seconds: float) -> None:
        model = self._batch_costs.get(collection)
        if model is None:
            model = self._batch_costs[collection] = BatchCostModel(max_age_s=self._config.batch_estimate_max_age_s)
        model.observe(n_queries, seconds, asyncio.get_running_loop().time())

    def _batch_fits(self, jobs: list["_SearchJob"]) -> bool:
        """Whether one shard request may carry these searches: within the per-batch query cap (a lone
        request of more is sent alone), their queries within half the message limit (the rest is left for
        the answers' headroom), and, by the recent batch times, answered before the earliest of their
        deadlines. The caps keep a batch short: one batch of thousands of queries would take longer than
        its members' deadlines, and every one of them would be lost together."""
        if len(jobs) == 1:
            return True
        n_queries = sum(j.n_queries for j in jobs)
        if (
            n_queries > self._config.max_batch_queries
            or n_queries > self._config.max_queries_per_request
            or sum(len(j.request.queries) for j in jobs) > self._config.max_message_bytes // 2
        ):
            return False
        predicted = self._predict_batch_s(jobs[0].view.record.name, n_queries)
        now = asyncio.get_running_loop().time()
        return predicted is None or predicted <= min(j.deadline - now for j in jobs)

    def _search_expired(self, job: "_SearchJob") -> Exception | None:
        """A queued search whose deadline passed is failed before its batch is sent: it takes no place in
        the batch and costs the shards nothing. (Not one the estimates say will be late: a few slow batches,
        a replica failing over, would then drop searches the next batch answers in time.)"""
        if job.deadline <= asyncio.get_running_loop().time():
            return DeadlineExceeded("the search's deadline passed while it waited in the router's queue")
        return None

    async def _search_batch(self, key: Any, jobs: list["_SearchJob"]) -> list[Any]:
        """One scatter-gather for every job in the batch (they share `key`), split back per job.

        Each job keeps the deadline its caller set: the shards are asked under the latest one, and each
        job is answered from the shards that answered by its own deadline (a search that waited in the
        queue past its deadline is not sent at all).
        """
        loop = asyncio.get_running_loop()
        answers: list[Any] = [None] * len(jobs)
        for position, job in enumerate(jobs):
            if job.deadline <= loop.time():
                answers[position] = DeadlineExceeded("the search's deadline passed while it waited in the router's queue")
        live = [position for position, answer in enumerate(answers) if answer is None]
        if not live:
            return answers
        batch = [jobs[position] for position in live]
        view, request = batch[0].view, batch[0].request
        queries = request.queries if len(batch) == 1 else b"".join(j.request.queries for j in batch)
        n_queries = sum(j.n_queries for j in batch)
        timeout = max(j.deadline for j in batch) - loop.time()
        first_due = min(j.deadline for j in batch) - loop.time()
        shards = self._target_shards(view, request.partition_key)
        field = view.record.partition_key_field
        # A keyed search sees only its key's points: its shard holds other keys' points too.
        shard_filter = key_filter(field, request.partition_key, request.filter) if field and request.partition_key else request.filter
        # Batches come back packed (one message per shard, merged in arrays); a single query's few hits merge
        # faster as messages. Metadata, vectors and keyed ids (translated back per hit) need the messages.
        packed = n_queries > 1 and not (request.include_metadata or request.include_vectors or field)
        calls = {}
        local = self.local_searches
        here: dict[int, shard_pb2.SearchRequest] = {}
        request_ids = [j.request_id for j in batch]
        for shard in shards:
            sub = shard_pb2.SearchRequest(
                ref=self._ref(view, shard),
                queries=queries,
                k=request.k,
                filter=shard_filter,
                params=request.params,
                include_metadata=request.include_metadata,
                include_vectors=request.include_vectors,
                packed_hits=packed,
            )
            replicas = view.replicas(shard)
            # The local replica, unless its record (slow or refusing lately) says another answers sooner.
            if local is not None and local.address in replicas and self.replica_reads.prefers(local.address, replicas):
                here[shard] = sub
            else:
                # A coalesced batch runs in its first member's task: name every member's request id explicitly.
                calls[shard] = self._replicated(view, shard, "Search", sub, timeout, request_ids, first_due, replicas=replicas)
        offsets = np.cumsum([0] + [j.n_queries for j in batch]).tolist()
        sent = loop.time()
        self._in_flight[key] = (sent, self._predict_batch_s(view.record.name, n_queries) or 0.0)
        started = None
        if here:
            assert local is not None
            elsewhere = functools.partial(self._search_elsewhere, view, here, local.address, sent + timeout, sent + first_due, request_ids)
            started = local.start(here, timeout, request_ids, elsewhere)
        gather = Gather(calls, started)
        translated: set[int] = set()
        try:
            waiting = sorted(range(len(batch)), key=lambda member: batch[member].deadline)
            while waiting:
                outcomes = await gather.wait(batch[waiting[0]].deadline - loop.time())
                now = loop.time()
                due = waiting if gather.finished else [m for m in waiting if batch[m].deadline <= now] or waiting[:1]
                replies = await self._replies(view, request, outcomes, n_queries, len(shards), translated, packed)
                for member in due:
                    answers[live[member]] = replies if isinstance(replies, Exception) else _member_response(
                        replies[0], offsets[member], offsets[member + 1], replies[1], view.version, batch[member].request.packed_hits
                    )
                waiting = [m for m in waiting if m not in due]
        finally:
            # A batch cut off by its deadlines counts with the time it had: it took at least that long.
            self._record_batch_time(view.record.name, n_queries, loop.time() - sent)
            self._in_flight.pop(key, None)
            gather.cancel()
        return answers

    def _search_elsewhere(
        self, view: CollectionView, searches: dict[int, shard_pb2.SearchRequest], local_address: str, deadline: float, first_deadline: float,
        request_ids: list[str], shard: int,
    ) -> Awaitable[shard_pb2.SearchResponse] | None:
        """A shard's search failed over from this process's replica to its others (None: it has none)."""
        others = [a for a in view.replicas(shard) if a != local_address]
        if not others:
            return None
        now = asyncio.get_running_loop().time()
        return self._replicated(
            view, shard, "Search", searches[shard], max(deadline - now, 0.0), request_ids, max(first_deadline - now, 0.0), replicas=others,
        )()

    async def _replies(
        self, view: CollectionView, request: Any, outcomes: list[Outcome[Any]], n_queries: int, n_shards: int, translated: set[int],
        packed: bool,
    ) -> tuple[list[types_pb2.QueryResult] | HitBatch, router_pb2.Coverage] | QuiverError:
        """The merged results of a batch from the shards that have answered, or why they are not enough."""
        try:
            raise_caller_errors(outcomes)
            require_coverage(outcomes, request.allow_partial, f"search of {view.record.name!r}")
        except QuiverError as error:
            return error
        answered = [o.value for o in outcomes if o.ok]
        if view.record.partition_key_field:
            for answer in answered:
                if id(answer) not in translated:  # a batch's answers are read once per member deadline
                    translated.add(id(answer))
                    for result in answer.results:
                        result.ids[:] = [caller_id(i) for i in result.ids]
        coverage = router_pb2.Coverage(shards_asked=n_shards, shards_answered=len(answered), partial=len(answered) < n_shards)
        if coverage.partial:
            PARTIAL_RESULTS.inc()
        if packed:
            merge: Callable[[], Any] = functools.partial(_merge_packed, answered, n_queries, request.k)
        elif len(answered) == 1:
            return list(answered[0].results), coverage
        else:
            merge = functools.partial(_merge_batch, answered, n_queries, request.k, view.record.dim,
                                      with_metadata=request.include_metadata, with_vectors=request.include_vectors)
        if n_queries * request.k > self._config.offload_points:
            return await asyncio.get_running_loop().run_in_executor(self._cpu, merge), coverage
        return merge(), coverage


class _SealedForCutover(Exception):
    """A shard of the version written to refused the write: it is sealed for a cutover to another version."""


_OLD_SEALED_TEXT = "sealed against writes"
_SEALED_RECHECK_S = 0.05  # a write refused by a seal is resent at least this often while the seal lasts


def _raise_if_sealed(view: CollectionView, outcomes: list[Any]) -> None:
    for outcome in outcomes:
        # By the marker; by the text only from a shard too old to send one (a rolling upgrade).
        if outcome.code == grpc.StatusCode.UNAVAILABLE and (
            outcome.refusal == SealedAgainstWrites.refusal or (not outcome.refusal and _OLD_SEALED_TEXT in outcome.message)
        ):
            raise _SealedForCutover(f"collection {view.record.name!r} v{view.version} is being cut over to another version")


def _split_upsert(request: router_pb2.RouterUpsertRequest, view: CollectionView, ref: Any) -> dict[int, shard_pb2.UpsertRequest]:
    """The whole upsert checked (ids, vectors, metadata) and cut into one request per shard."""
    ids = list(request.ids)
    if not ids:
        raise InvalidArgument("upsert carries no ids")
    check_ids(ids)
    vectors = vectors_from_bytes(request.vectors, view.record.dim, len(ids), "vectors")
    check_vectors(vectors, view.record.metric)
    metadata_list_from_proto(request.metadata, len(ids))  # validates every entry before any shard sees one
    n_shards = view.record.shards
    metadata: Any = request.metadata
    field = view.record.partition_key_field
    if request.partition_key:
        assignment = np.full(len(ids), shard_for_key(request.partition_key, n_shards))
    else:
        assignment = shards_for_keys(ids, n_shards)
    if field:  # keyed: stored as (key, id), with the key in its field
        key = request.partition_key
        ids = [stored_id(key, i) for i in ids]
        metadata = [with_key(metadata[n] if len(metadata) else types_pb2.Metadata(), field, key, n) for n in range(len(ids))]
    by_shard = {}
    for shard in np.unique(assignment).tolist():
        rows = np.flatnonzero(assignment == shard)
        by_shard[shard] = shard_pb2.UpsertRequest(
            ref=ref(view, shard),
            ids=[ids[r] for r in rows.tolist()],
            vectors=vectors[rows].tobytes(),
            metadata=[metadata[r] for r in rows.tolist()] if len(metadata) else [],
        )
    return by_shard


async def _finish_in_background(gather: Gather[Any], timeout: float, release: Callable[[], None]) -> None:
    """Lets a refused write's other shard calls finish (they may have been applied: the caller resends
    all of it), then gives their bytes back to the write budget."""
    try:
        await gather.wait(timeout)
    finally:
        gather.cancel()
        release()


@dataclass(frozen=True)
class _SearchJob:
    view: CollectionView
    request: router_pb2.RouterSearchRequest
    n_queries: int
    deadline: float  # the event loop's clock
    request_id: str = ""


def _merge_batch(answers: list[shard_pb2.SearchResponse], n_queries: int, k: int, dim: int, *,
                 with_metadata: bool, with_vectors: bool) -> list[types_pb2.QueryResult]:
    """Global top-k per query from the shards' answers; a batch is merged in numpy at once, a single query
    by sorting its few candidates in Python (the arrays cost more than the merge). `with_metadata` /
    `with_vectors`: the request asked the shards for them (taken from it, not found by reading every result)."""
    results = [answer.results for answer in answers]
    if n_queries == 1:
        chosen = _top_of_one(answers, k)
        ids = [[results[s][0].ids[p] for s, p in chosen[0]]]
        scores = [[results[s][0].scores[p] for s, p in chosen[0]]]
    else:
        ids, scores, shards, positions = merge_results_batch(results, n_queries, k)
        chosen = []  # (shard, position) pairs: wanted only to carry metadata or vectors over with the ids
        if with_metadata or with_vectors:
            chosen = [[(s, p) for s, p in zip(shards[q].tolist(), positions[q].tolist()) if p >= 0] for q in range(n_queries)]
    row_bytes = 4 * dim
    merged = []
    for q in range(n_queries):
        per_shard = [shard[q] for shard in results]
        result = types_pb2.QueryResult(
            ids=ids[q],
            scores=scores[q],
            strategy=per_shard[0].strategy,
            estimated_cost_us=sum(r.estimated_cost_us for r in per_shard),
            filter_matches=sum(r.filter_matches for r in per_shard),
        )
        if with_metadata:
            result.metadata.extend(per_shard[s].metadata[p] for s, p in chosen[q])
        if with_vectors:
            result.vectors = b"".join(per_shard[s].vectors[p * row_bytes : (p + 1) * row_bytes] for s, p in chosen[q])
        merged.append(result)
    return merged


def _merge_packed(answers: list[shard_pb2.SearchResponse], n_queries: int, k: int) -> HitBatch:
    """Global top-k per query from shards' packed answers (a shard too old to pack answers in messages)."""
    batches = [HitBatch.from_proto(a.hits) if a.HasField("hits") else HitBatch.from_results(a.results) for a in answers]
    if any(b.n_queries != n_queries for b in batches):  # a lone shard's answer is not merged, so checked here
        raise ValueError(f"shards answered for {[b.n_queries for b in batches]} queries; the batch has {n_queries}")
    return merge_hit_batches(batches, k)


def _member_response(
    merged: list[types_pb2.QueryResult] | HitBatch, start: int, end: int, coverage: router_pb2.Coverage, version: int, packed: bool,
) -> router_pb2.RouterSearchResponse:
    """One coalesced member's answer (its queries [start, end) of the batch), in the form it asked for."""
    if isinstance(merged, HitBatch):
        part = merged.queries(start, end)
        if packed:
            return router_pb2.RouterSearchResponse(hits=part.to_proto(), coverage=coverage, version=version)
        return router_pb2.RouterSearchResponse(results=part.to_results(), coverage=coverage, version=version)
    results = merged[start:end]
    if packed:
        return router_pb2.RouterSearchResponse(hits=HitBatch.from_results(results).to_proto(), coverage=coverage, version=version)
    return router_pb2.RouterSearchResponse(results=results, coverage=coverage, version=version)


def _top_of_one(answers: list[shard_pb2.SearchResponse], k: int) -> list[list[tuple[int, int]]]:
    """The same for a batch of one query: a stable sort of its candidates, listed in shard then position
    order, so ties keep that order as merge_topk_batch's do."""
    candidates = [(score, s, p) for s, answer in enumerate(answers) for p, score in enumerate(answer.results[0].scores)]
    candidates.sort(key=lambda c: -c[0])
    return [[(s, p) for _, s, p in candidates[:k]]]
