"""Replicated collections (replication_factor 2 on three fake shards): reads fail over to the other replica
when one is down, refused or frozen; a caller error is not retried; writes go to each shard's primary
alone, with its term (the fakes emulate the primary's replication to their peers).

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
from router.hashring import shard_for_key
from shard.durable_partition import StaleTerm
from tests.eventually import assert_eventually_async as eventually
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


async def test_every_write_goes_to_its_shards_primary_alone_carrying_the_primarys_term(cluster):
    await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], np.ones((N, DIM), np.float32))
    await cluster.client.delete("docs", ["p1", "p2", "p3"])
    for fake in range(3):  # fake-i is the primary of shard i (round-robin placement over sorted ids)
        for method in ("Upsert", "Delete"):
            requests = cluster.fakes[fake].requests(method)
            assert {r.ref.shard for r in requests} == {fake} and {r.term for r in requests} == {1}, (fake, method)


async def test_with_a_shards_primary_down_its_writes_are_refused_naming_it_and_its_reads_still_answer(cluster):
    vectors = await load(cluster)
    await cluster.registrations[0].close()  # fake-0, the primary of shard 0, leaves the cluster
    cluster.registrations[0].closed_by_test = True
    await eventually(lambda: "fake-0" not in cluster.router.watcher.current.servers, timeout=5)
    shard0 = next(f"p{i}" for i in range(N) if shard_for_key(f"p{i}", 3) == 0)
    with pytest.raises(Unavailable, match="primary, server fake-0"):
        await cluster.client.upsert("docs", [shard0], vectors[:1])
    assert not any(r.ref.shard == 0 for r in cluster.fakes[1].requests("Upsert"))  # never to a follower
    points = await cluster.client.get("docs", [f"p{i}" for i in range(N)])
    assert sorted(int(p.id[1:]) for p in points) == list(range(N))


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


async def test_an_upsert_whose_primary_answers_unavailable_is_answered_unavailable_and_retried(cluster):
    vectors = await load(cluster)
    cluster.fakes[1].fail("Upsert", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable, match="safe to retry"):
        await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
    # Shard 1's primary was asked on every attempt (the client's retry policy made four); its follower never.
    attempts = RETRY_SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    assert shards_asked(cluster, 1, "Upsert") == [1] * attempts
    assert 1 not in shards_asked(cluster, 2, "Upsert")


@pytest.mark.parametrize("method", ["Upsert", "Delete"])
async def test_a_write_refused_by_a_deposed_primary_is_answered_unavailable_and_retried_not_failed_precondition(cluster, method):
    # A primary that has seen a newer term refuses with StaleTerm (FAILED_PRECONDITION, marked stale-term):
    # the router's placement is behind, which is not the caller's error, so the caller's retry policy resends.
    vectors = await load(cluster)
    cluster.fakes[1].fail(method, StaleTerm("partition docs/1: a write of term 1 arrived, but term 2 has begun"))
    with pytest.raises(Unavailable, match="shard map was behind the cluster's for a moment, nothing was applied there"):
        if method == "Upsert":
            await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
        else:
            await cluster.client.delete("docs", [f"p{i}" for i in range(N)])
    attempts = RETRY_SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    assert shards_asked(cluster, 1, method) == [1] * attempts


async def test_a_delete_counts_what_each_shards_primary_deleted(cluster):
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
