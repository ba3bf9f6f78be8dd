"""Replicated collections (replication_factor 2 on three fake shards): reads fail over to the other replica
when one is down, refused or frozen; a caller error is not retried; writes go to every replica and need all;
a delete counts each shard once although both replicas answer.

Placement is round-robin over the sorted server ids, so shard i lives on fake-i (asked first) and fake-(i+1).
"""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from quiver.client import RETRY_SERVICE_CONFIG
from quiver.errors import InvalidArgument, Unavailable
from quiver.filters import Range
from tests.fake_shard import FakeCluster, exact_top, fake_cluster

DIM = 8
N = 60


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        await running.client.create_collection("docs", DIM, index="flat", shards=3, replication_factor=2)
        yield running


async def load(cluster: FakeCluster) -> np.ndarray:
    vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], vectors, [{"n": i} for i in range(N)])
    cluster.clear_logs()
    return vectors


def shards_asked(cluster: FakeCluster, fake: int, method: str) -> list[int]:
    return sorted(r.ref.shard for r in cluster.fakes[fake].requests(method))


async def test_every_write_reaches_both_replicas_of_its_shard(cluster):
    await load(cluster)
    for shard in range(3):
        first, second = cluster.fakes[shard], cluster.fakes[(shard + 1) % 3]
        assert first.point_ids("docs", shard) == second.point_ids("docs", shard) != set()


async def down(cluster: FakeCluster, how: str) -> None:
    """Take fake-0 (first replica of shard 0, second of shard 2) out of service."""
    fake = cluster.fakes[0]
    if how == "stopped":
        await fake.stop()
    elif how == "frozen":
        fake.freeze("Search")
        fake.freeze("Get")
    else:
        fake.fail("Search", grpc.StatusCode.UNAVAILABLE)
        fake.fail("Get", grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("how", ["unavailable", "stopped", "frozen"])
async def test_search_and_get_fail_over_to_the_other_replica(cluster, how):
    vectors = await load(cluster)
    await down(cluster, how)
    async with cluster.client_with_deadline(4.0) as client:
        results, points = await asyncio.gather(client.search("docs", vectors[:3], 5), client.get("docs", [f"p{i}" for i in range(N)]))
    assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, 5) for q in vectors[:3]]
    assert all(not r.partial and r.shards_answered == 3 for r in results)
    assert sorted(int(p.id[1:]) for p in points) == list(range(N))
    for method in ("Search", "Get"):
        assert shards_asked(cluster, 1, method) == [0, 1]  # shard 0 went to its second replica


async def test_a_replicas_caller_error_is_returned_not_retried_on_the_other_replica(cluster):
    vectors = await load(cluster)
    cluster.fakes[0].fail("Search", grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(InvalidArgument, match="injected"):
        await cluster.client.search("docs", vectors[0], 5)
    assert shards_asked(cluster, 1, "Search") == [1]


async def test_an_upsert_with_one_replica_unavailable_is_answered_unavailable(cluster):
    vectors = await load(cluster)
    cluster.fakes[1].fail("Upsert", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable, match="safe to retry"):
        await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
    # Both replicas of shard 1 were asked on every attempt: the client's retry policy made four.
    attempts = RETRY_SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    assert shards_asked(cluster, 1, "Upsert") == [0] * attempts + [1] * attempts


async def test_a_delete_counts_each_shard_once_although_both_replicas_answer(cluster):
    await load(cluster)
    doomed = [f"p{i}" for i in range(10)]
    assert await cluster.client.delete("docs", doomed + ["p-missing"]) == 10
    assert await cluster.client.delete("docs", filter=Range("n", gte=50)) == 10
    left = {f"p{i}" for i in range(10, 50)}
    for shard in range(3):
        assert cluster.fakes[shard].point_ids("docs", shard) == cluster.fakes[(shard + 1) % 3].point_ids("docs", shard)
    assert set().union(*(f.point_ids("docs") for f in cluster.fakes)) == left


async def test_with_one_replica_frozen_searches_inside_a_short_deadline_all_answer_in_full(cluster):
    vectors = await load(cluster)
    cluster.fakes[0].freeze("Search")
    queries = vectors[:8]
    failures = []
    async with cluster.client_with_deadline(0.5) as client:  # the frozen replica gets about half of it, once

        async def searcher(n: int) -> None:
            for i in range(50):
                try:
                    [result] = await client.search("docs", queries[(n + i) % 8], 5)
                except Exception as error:  # noqa: BLE001 - counted, then asserted below
                    failures.append(repr(error))
                    continue
                if result.partial or result.shards_answered != 3:
                    failures.append(f"partial: {result.shards_answered} of 3")

        await asyncio.gather(*(searcher(n) for n in range(4)))
    assert failures == []
    # The frozen replica was learned quickly: most reads never went near it.
    frozen_asked = len(cluster.fakes[0].requests("Search"))
    assert frozen_asked < 40, frozen_asked
    cluster.fakes[0].release("Search")
