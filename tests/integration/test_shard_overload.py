"""A shard server under overload: past its budgets it refuses at once (RESOURCE_EXHAUSTED with a retry
hint) instead of queueing without bound; work whose caller left or whose deadline passed is never started;
and one kind of work cannot starve another: commits go on while every search thread is busy, and the etcd
lease stays alive while every worker thread of the process is.

The overload is made real by holding the server's own threads: a job that waits on an event occupies a
search thread (or a partition's commit thread) exactly as a slow exact scan or a slow fsync would.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest

from quiver.specs import PartitionKey
from quiver.v1 import shard_pb2, types_pb2
from shard.admission import AdmissionBudgets
from shard.executors import ExecutorSizes
from shard.server import ShardServer
from tests.eventually import assert_eventually_async
from tests.shard_harness import packed, ref, running_shard, spec

DIM = 8
TIMEOUT_S = 20.0
KEY = PartitionKey("docs", 0, 1)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@contextmanager
def held(pool, threads: int = 1) -> Iterator[threading.Event]:  # type: ignore[no-untyped-def]
    """Occupy `threads` threads of `pool` until the block ends."""
    gate = threading.Event()
    jobs = [pool.submit(gate.wait) for _ in range(threads)]
    try:
        yield gate
    finally:
        gate.set()
        for job in jobs:
            job.result(timeout=TIMEOUT_S)


async def loaded(tmp_path, n: int = 100, **config) -> AsyncIterator[tuple[ShardServer, object]]:  # type: ignore[no-untyped-def]
    async with running_shard(tmp_path / "data", **config) as (server, stub):
        flat = spec(DIM, types_pb2.IndexSpec(flat=types_pb2.FlatParams()), metric=types_pb2.L2)
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=flat), timeout=TIMEOUT_S)
        await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}" for i in range(n)], vectors=packed(rows(n))), timeout=TIMEOUT_S)
        yield server, stub


def search(queries: np.ndarray, k: int = 3) -> shard_pb2.SearchRequest:
    return shard_pb2.SearchRequest(ref=ref(), queries=packed(queries), k=k)


def upsert(ids: list[str], seed: int = 1) -> shard_pb2.UpsertRequest:
    return shard_pb2.UpsertRequest(ref=ref(), ids=ids, vectors=packed(rows(len(ids), seed)))


def pushback(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")


async def test_searches_past_the_query_budget_are_refused_at_once_with_a_retry_hint(tmp_path):
    config = dict(admission=AdmissionBudgets(queries_in_flight=4, retry_after_s=0.25), executors=ExecutorSizes(searches=1))
    async for server, stub in loaded(tmp_path, **config):
        queries = rows(5, seed=7)
        with held(server.executors.searches):
            admitted = [asyncio.ensure_future(stub.Search(search(queries[i : i + 2]), timeout=TIMEOUT_S)) for i in (0, 2)]
            await assert_eventually_async(lambda: server.admission.queries == 4)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(search(queries[4:5]), timeout=TIMEOUT_S)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded with searches" in refused.value.details() and "4 queries are in flight" in refused.value.details()
            assert pushback(refused.value) == "250"
            assert not any(task.done() for task in admitted)  # refused while the admitted ones still wait
        answers = await asyncio.gather(*admitted)
        assert [len(r.results) for r in answers] == [2, 2]
        assert server.admission.queries == 0
        assert len((await stub.Search(search(queries[4:5]), timeout=TIMEOUT_S)).results) == 1  # room again


async def test_writes_past_the_queued_bytes_budget_are_refused_at_once_and_the_admitted_ones_land(tmp_path):
    config = dict(admission=AdmissionBudgets(queued_write_bytes=2000))
    async for server, stub in loaded(tmp_path, **config):
        partition = server.registry.get(KEY)
        first = upsert([f"a{i}" for i in range(40)])  # ~1.6 kB: admitted alone
        with held(partition._commit_thread):
            queued = asyncio.ensure_future(stub.Upsert(first, timeout=TIMEOUT_S))
            await assert_eventually_async(lambda: server.admission.write_bytes == first.ByteSize())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Upsert(upsert([f"b{i}" for i in range(20)], seed=2), timeout=TIMEOUT_S)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded with writes" in refused.value.details() and pushback(refused.value) is not None
        assert (await queued).upserted == 40
        await stub.Upsert(upsert([f"b{i}" for i in range(20)], seed=2), timeout=TIMEOUT_S)  # retried: fits now
        got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=[f"a{i}" for i in range(40)] + [f"b{i}" for i in range(20)]), timeout=TIMEOUT_S)
        assert len(got.points) == 60
        assert server.admission.write_bytes == 0


async def test_a_write_whose_deadline_passes_while_queued_is_never_applied(tmp_path):
    async for server, stub in loaded(tmp_path):
        partition = server.registry.get(KEY)
        lsn_before = (await partition.stats())["last_lsn"]
        with held(partition._commit_thread):
            with pytest.raises(grpc.aio.AioRpcError) as expired:
                await stub.Upsert(upsert(["late"]), timeout=0.3)
            assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server's deadline is the caller's timeout counted from when the request arrived, a little
            # after the caller's own: hold the commit thread until that one has surely passed too.
            await asyncio.sleep(0.5)
        await stub.Upsert(upsert(["next"], seed=3), timeout=TIMEOUT_S)
        got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=["late", "next"]), timeout=TIMEOUT_S)
        assert [p.id for p in got.points] == ["next"]
        assert (await partition.stats())["last_lsn"] == lsn_before + 1  # "late" never reached the log


async def test_a_search_whose_caller_gave_up_while_it_was_queued_is_never_run(tmp_path):
    config = dict(executors=ExecutorSizes(searches=1))
    async for server, stub in loaded(tmp_path, **config):
        partition = server.registry.get(KEY)
        runs: list[int] = []
        real_search = partition.state.search

        def counted_search(queries, *args, **kwargs):  # type: ignore[no-untyped-def]
            runs.append(len(queries))  # the real search still runs: this only counts
            return real_search(queries, *args, **kwargs)

        partition.state.search = counted_search  # type: ignore[method-assign]
        with held(server.executors.searches):
            with pytest.raises(grpc.aio.AioRpcError) as gave_up:
                await stub.Search(search(rows(3, seed=9)), timeout=0.3)
            assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await assert_eventually_async(lambda: server.admission.queries == 0)
        await stub.Search(search(rows(1, seed=10)), timeout=TIMEOUT_S)
        assert runs == [1]  # only the search whose caller waited for it


async def test_commits_and_stats_go_on_while_every_search_thread_is_busy(tmp_path):
    config = dict(executors=ExecutorSizes(searches=2))
    async for server, stub in loaded(tmp_path, **config):
        with held(server.executors.searches, threads=2):
            stuck = asyncio.ensure_future(stub.Search(search(rows(4, seed=5)), timeout=TIMEOUT_S))
            reply = await stub.Upsert(upsert(["during"], seed=4), timeout=TIMEOUT_S)
            assert reply.upserted == 1 and not stuck.done()
            stats = await stub.Stats(shard_pb2.StatsRequest(ref=ref()), timeout=TIMEOUT_S)  # and says how it is
            assert stats.partitions[0].point_count == 101
        assert len((await stuck).results) == 4


async def test_the_etcd_lease_stays_alive_while_every_worker_thread_of_the_process_is_busy(tmp_path, store):
    async with running_shard(tmp_path / "data", executors=ExecutorSizes(searches=2)) as (server, _stub):
        registration = await store.register_server("busy-server", server.address, ttl=2)
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        hogs: list[asyncio.Future[bool]] = []
        try:
            # asyncio's default pool (what lease renewals once shared with searches) and the search pool, full.
            hogs += [loop.run_in_executor(None, gate.wait) for _ in range(64)]
            with held(server.executors.searches, threads=2):
                await asyncio.sleep(3 * registration.granted_ttl)
                record = await asyncio.wait_for(store.client.get(registration.key), timeout=TIMEOUT_S)
                assert record is not None, "the server's record expired"
        finally:
            gate.set()
            await asyncio.gather(*hogs)
            await registration.close()
