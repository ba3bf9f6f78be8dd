"""No CPU-heavy step on an event loop: decoding and normalising a large request, a search with a huge
ef_search, splitting a large upsert and merging a large search batch at the router all run on worker
threads, while a small request stays on the loop (where a thread hop would cost more than the work).

What is checked is where the work ran (the thread each step was called on), not how long the loop
stalled: the placement is what the code decides, and it does not depend on the machine's speed.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import router.servicer as router_servicer
import shard.servicer as shard_servicer
from quiver.specs import PartitionKey
from shard.executors import ExecutorSizes
from quiver.v1 import router_pb2, shard_pb2, types_pb2
from tests.fake_shard import fake_cluster, unit_rows
from tests.shard_harness import packed, ref, running_shard, spec

DIM = 16
TIMEOUT_S = 20.0


class ThreadLog:
    """Wraps a function; records the name of the thread each call ran on, and calls the real one."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.real, self.threads = real, []

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.threads.append(threading.current_thread().name)
        return self.real(*args, **kwargs)

    def take(self) -> list[str]:
        threads, self.threads = self.threads, []
        return threads


def on_loop(threads: list[str]) -> bool:
    return threads == [threading.main_thread().name]


def on_worker(threads: list[str], prefix: str) -> bool:
    return len(threads) == 1 and threads[0].startswith(prefix)


async def test_the_shard_decodes_large_requests_and_runs_huge_ef_searches_off_the_loop(tmp_path, monkeypatch):
    prepare = ThreadLog(shard_servicer.prepare_vectors)
    monkeypatch.setattr(shard_servicer, "prepare_vectors", prepare)
    vectors = unit_rows(np.random.default_rng(0), 3000, DIM)
    async with running_shard(tmp_path / "data") as (server, stub):
        hnsw = spec(DIM, types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=8, ef_construction=32)))
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=hnsw), timeout=TIMEOUT_S)
        await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}" for i in range(2000)], vectors=packed(vectors[:2000])), timeout=TIMEOUT_S)
        assert on_worker(prepare.take(), "search")
        await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["small"], vectors=packed(vectors[2000:2001])), timeout=TIMEOUT_S)
        assert on_loop(prepare.take())

        partition = server.registry.get(PartitionKey("docs", 0, 1))
        searched = ThreadLog(partition.state.search)
        partition.state.search = searched  # type: ignore[method-assign]
        one = packed(vectors[5:6])
        await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=one, k=10), timeout=TIMEOUT_S)
        assert on_loop(searched.take())  # ~0.1 ms of work: cheaper on the loop than a thread hop
        huge_ef = shard_pb2.SearchRequest(ref=ref(), queries=one, k=10, params=types_pb2.SearchParams(ef_search=2000))
        await stub.Search(huge_ef, timeout=TIMEOUT_S)
        assert on_worker(searched.take(), "search")
        assert on_loop(prepare.take()[-1:])  # the single-query searches were decoded on the loop
        many = shard_pb2.SearchRequest(ref=ref(), queries=packed(vectors[:1500]), k=10)
        await stub.Search(many, timeout=TIMEOUT_S)
        assert on_worker(prepare.take(), "search") and on_worker(searched.take(), "search")


class KnnThreads:
    """Stands in front of a partition's hnswlib index: records the num_threads of each knn_query, then runs it."""

    def __init__(self, index) -> None:  # type: ignore[no-untyped-def]
        self.index, self.asked = index, []

    def knn_query(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.asked.append(kwargs.get("num_threads"))
        return self.index.knn_query(*args, **kwargs)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.index, name)


@pytest.mark.parametrize("search_threads, hnswlib_threads", [(0, -1), (1, 1), (3, 3)])
async def test_a_shard_given_search_threads_runs_each_hnsw_batch_on_at_most_that_many(tmp_path, search_threads, hnswlib_threads):
    vectors = unit_rows(np.random.default_rng(2), 500, DIM)
    async with running_shard(tmp_path / "data", executors=ExecutorSizes(searches=search_threads)) as (server, stub):
        hnsw = spec(DIM, types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=8, ef_construction=32)))
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=hnsw), timeout=TIMEOUT_S)
        await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}" for i in range(500)], vectors=packed(vectors)), timeout=TIMEOUT_S)
        index = server.registry.get(PartitionKey("docs", 0, 1)).state.index
        spy = index._index = KnnThreads(index._index)
        batch = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(vectors[:20]), k=5), timeout=TIMEOUT_S)
        assert [r.ids[0] for r in batch.results] == [f"p{i}" for i in range(20)]
        assert spy.asked == [hnswlib_threads]  # 0 threads set: one per core, and hnswlib's every core


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        yield running


async def test_the_router_splits_large_upserts_and_merges_large_batches_off_the_loop(cluster, monkeypatch):
    split = ThreadLog(router_servicer._split_upsert)
    merge = ThreadLog(router_servicer._merge_batch)
    merge_packed = ThreadLog(router_servicer._merge_packed)
    monkeypatch.setattr(router_servicer, "_split_upsert", split)
    monkeypatch.setattr(router_servicer, "_merge_batch", merge)
    monkeypatch.setattr(router_servicer, "_merge_packed", merge_packed)
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    vectors = unit_rows(np.random.default_rng(1), 2100, DIM)
    # One request of 2,000 points (the client would cut it into batches).
    await cluster.stub.Upsert(router_pb2.RouterUpsertRequest(collection="docs", ids=[f"p{i}" for i in range(2000)], vectors=packed(vectors[:2000])), timeout=TIMEOUT_S)
    assert on_worker(split.take(), "router-cpu")
    await cluster.client.upsert("docs", ["small"], vectors[2000:2001])
    assert on_loop(split.take())

    results = await cluster.client.search("docs", vectors[:100], 20)  # 2,000 slots to merge from 3 shards
    assert on_worker(merge_packed.take(), "router-cpu")  # ids and scores alone: the packed merge
    assert [r.ids[0] for r in results] == [f"p{i}" for i in range(100)]
    await cluster.client.search("docs", vectors[:2], 5)
    assert on_loop(merge_packed.take())
    with_metadata = await cluster.client.search("docs", vectors[:100], 20, include_metadata=True)
    assert on_worker(merge.take(), "router-cpu")  # metadata travels in messages: the message merge
    assert [r.ids[0] for r in with_metadata] == [f"p{i}" for i in range(100)]
    await cluster.client.search("docs", vectors[:2], 5, include_metadata=True)
    assert on_loop(merge.take())
