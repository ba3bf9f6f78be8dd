"""The router's own write admission: its budget of queued upsert bytes, and the backpressure it keeps from
shard servers that refused a write for overload (their retry pushback), seen from the fake shards' logs."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from quiver.errors import ResourceExhausted
from router.hashring import shard_for_key
from tests.eventually import assert_eventually_async
from tests.fake_shard import FakeCluster, FakeShard, fake_cluster

DIM = 4


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def holder(cluster: FakeCluster, shard: int) -> FakeShard:
    """The fake holding `shard` of collection "docs" (rf 1: exactly one)."""
    (fake,) = [f for f in cluster.fakes if any(key[0] == "docs" and key[1] == shard for key in f.partitions)]
    return fake


def key_for_shard(shard: int, shards: int) -> str:
    return next(f"k{n}" for n in range(1000) if shard_for_key(f"k{n}", shards) == shard)


def upserts_seen(cluster: FakeCluster) -> int:
    return sum(len(f.requests("Upsert")) for f in cluster.fakes)


async def test_after_a_shard_refuses_a_write_for_overload_the_router_refuses_writes_to_it_at_once_for_its_pushback(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=3) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
        await cluster.client.create_collection("keyed", DIM, index="flat", shards=3, partition_key_field="tenant")
        busy = holder(cluster, 0)
        busy.fail("Upsert", ResourceExhausted("shard server is overloaded with writes", retry_after_s=30))
        with pytest.raises(ResourceExhausted):
            await cluster.client.upsert("docs", [f"p{i}" for i in range(60)], rows(60))  # reaches every shard
        busy.heal()  # it would take writes again, but asked for 30 s (held by the router at most 1 s)
        sent = upserts_seen(cluster)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub.Upsert(
                cluster_upsert("docs", [f"q{i}" for i in range(60)], rows(60, 1)), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert busy.address in refused.value.details() and "nothing of this upsert was applied" in refused.value.details()
        pushback = dict(refused.value.trailing_metadata())["grpc-retry-pushback-ms"]
        assert 0 < int(pushback) <= 1000  # the router's own cap, not the shard's 30 s
        assert upserts_seen(cluster) == sent  # refused before any part went to any shard
        # A keyed write for the busy server is refused before it is split; one whose points all live on
        # other servers is not held back.
        # (Collection "keyed" places its shards as "docs" does: shard i on the same fake.)
        with pytest.raises(ResourceExhausted, match="nothing of this upsert was applied"):
            await cluster.client.upsert("keyed", ["s"], rows(1, 3), partition_key=key_for_shard(0, 3))
        assert upserts_seen(cluster) == sent
        other = key_for_shard(1, 3)
        await cluster.client.upsert("keyed", ["r"], rows(1, 2), partition_key=other)
        assert [p.id for p in await cluster.client.get("keyed", ["r"], partition_key=other)] == ["r"]
        assert len(holder(cluster, 1).point_ids("keyed")) == 1
        # Once the pushback has passed, writes reach the shard again.
        async def accepted() -> None:
            try:
                await cluster.client.upsert("docs", [f"q{i}" for i in range(60)], rows(60, 1))
            except ResourceExhausted as still_held:
                raise AssertionError(str(still_held)) from still_held

        await assert_eventually_async(accepted, timeout=5)
        assert {f"q{i}" for i in range(60)} <= set().union(*(f.point_ids("docs") for f in cluster.fakes))


async def test_a_shard_refusal_without_a_retry_hint_holds_nothing_back(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        cluster.fakes[0].fail("Upsert", grpc.StatusCode.RESOURCE_EXHAUSTED)
        with pytest.raises(ResourceExhausted):
            await cluster.client.upsert("docs", ["a"], rows(1))
        cluster.fakes[0].heal()
        await cluster.client.upsert("docs", ["a"], rows(1))
        assert cluster.fakes[0].point_ids("docs") == {"a"}


async def test_upserts_past_the_routers_queued_write_bytes_are_refused_at_once_and_the_first_completes(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1, max_queued_write_bytes=1000, retry_after_s=0.25) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        cluster.fakes[0].freeze("Upsert")
        first = asyncio.ensure_future(cluster.stub.Upsert(cluster_upsert("docs", ["a", "b"], rows(2)), timeout=10))
        await assert_eventually_async(lambda: len(cluster.fakes[0].requests("Upsert")) == 1)
        big = cluster_upsert("docs", [f"x{i}" for i in range(60)], rows(60, 1))  # > 1000 bytes
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub.Upsert(big, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "router is overloaded with writes" in refused.value.details()
        assert ("grpc-retry-pushback-ms", "250") in tuple(refused.value.trailing_metadata())
        assert len(cluster.fakes[0].requests("Upsert")) == 1
        cluster.fakes[0].release("Upsert")
        assert (await first).upserted == 2
        await cluster.stub.Upsert(big, timeout=10)  # the budget is free again: admitted
        assert cluster.fakes[0].point_ids("docs") == {"a", "b"} | {f"x{i}" for i in range(60)}


def cluster_upsert(collection: str, ids: list[str], vectors: np.ndarray):  # type: ignore[no-untyped-def]
    from quiver.v1 import router_pb2

    return router_pb2.RouterUpsertRequest(collection=collection, ids=ids, vectors=vectors.astype("<f4").tobytes())


async def test_a_large_upsert_for_a_held_back_server_is_refused_before_the_router_checks_or_splits_it(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        cluster.fakes[0].fail("Upsert", ResourceExhausted("overloaded", retry_after_s=30))
        with pytest.raises(ResourceExhausted):
            await cluster.client.upsert("docs", ["a"], rows(1))
        n = cluster.router.config.offload_points + 1
        wrong_size = cluster_upsert("docs", [f"p{i}" for i in range(n)], rows(n - 1))  # one vector short
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub.Upsert(wrong_size, timeout=5)
        # Shed before the costly check: the caller hears of the overload, not (yet) of its short batch.
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "nothing of this upsert was applied" in refused.value.details()
