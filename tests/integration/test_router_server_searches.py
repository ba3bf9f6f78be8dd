"""The router sends a query's searches for the shards one server holds as one SearchMany call, and each of
them still fails over, is refused or answers exactly as a lone Search would: a search refused inside the
call goes to its shard's other replica, a caller error reaches the caller unretried, and a server too old
for SearchMany is sent lone searches from then on.

Six shards on three fakes, two to a server (a replica elsewhere too, for the failover tests)."""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import grpc
import numpy as np
import pytest

from quiver.errors import InvalidArgument
from tests.fake_shard import FakeCluster, FakeShard, exact_top, fake_cluster

DIM = 8
N = 90
SHARDS = 6


@contextlib.asynccontextmanager
async def loaded(etcd: Any, etcd_root: str, replication: int = 1, **router_options: Any) -> AsyncIterator[tuple[FakeCluster, np.ndarray]]:
    async with fake_cluster(etcd.endpoint, etcd_root, **router_options) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=SHARDS, replication_factor=replication)
        vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
        await cluster.client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
        # The router learns which servers get several searches a query from its first (sent one by one).
        await cluster.client.search("docs", vectors[0], 1)
        cluster.clear_logs()
        yield cluster, vectors


def lone_searches(fake: FakeShard) -> list[int]:
    """Shards asked by plain Search calls (the fake logs each search a SearchMany carried as a Search too)."""
    carried = [s.ref.shard for many in fake.requests("SearchMany") for s in many.searches]
    every = [s.ref.shard for s in fake.requests("Search")]
    for shard in carried:
        every.remove(shard)
    return sorted(every)


def shards_asked(fake: FakeShard) -> list[int]:
    return sorted(s.ref.shard for s in fake.requests("Search"))


def assert_exact(results: list[Any], vectors: np.ndarray, queries: np.ndarray, k: int) -> None:
    assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, k) for q in queries]
    assert all(not r.partial and r.shards_answered == SHARDS for r in results)


@pytest.mark.parametrize("batched", [True, False], ids=["search-many", "one-call-per-shard"])
async def test_a_query_costs_one_call_per_server_holding_its_shards_with_the_same_answers(etcd, etcd_root, batched):
    async with loaded(etcd, etcd_root, batch_server_searches=batched) as (cluster, vectors):
        single = await cluster.client.search("docs", vectors[4], 5)
        batch = await cluster.client.search("docs", vectors[:3], 7)
        assert_exact(single, vectors, vectors[4:5], 5)
        assert_exact(batch, vectors, vectors[:3], 7)
        held = [sorted({s for s in shards_asked(fake)}) for fake in cluster.fakes]
        assert sorted(s for shards in held for s in shards) == list(range(SHARDS)) and all(len(h) == 2 for h in held)
        for fake, shards in zip(cluster.fakes, held):
            assert shards_asked(fake) == sorted(shards * 2)  # each of its two shards, once per router call
            if batched:
                calls = fake.requests("SearchMany")
                assert [sorted(s.ref.shard for s in many.searches) for many in calls] == [shards] * 2
                assert lone_searches(fake) == []
            else:
                assert fake.requests("SearchMany") == [] and lone_searches(fake) == sorted(shards * 2)
        searches = cluster.router.servicer.server_searches
        assert (searches is not None) == batched
        if batched:
            assert (searches.calls_sent, searches.searches_sent) == (6, 12)


@pytest.mark.parametrize("refused", ["each-search", "the-call"])
async def test_searches_refused_by_a_server_fail_over_each_to_its_shards_other_replica(etcd, etcd_root, refused):
    async with loaded(etcd, etcd_root, replication=2) as (cluster, vectors):
        cluster.fakes[0].fail("Search" if refused == "each-search" else "SearchMany", grpc.StatusCode.UNAVAILABLE)
        results = await cluster.client.search("docs", vectors[:4], 6)
        assert_exact(results, vectors, vectors[:4], 6)
        refused_shards = {s.ref.shard for many in cluster.fakes[0].requests("SearchMany") for s in many.searches}
        assert refused_shards or refused == "the-call"
        elsewhere = {s for fake in cluster.fakes[1:] for s in shards_asked(fake)}
        assert elsewhere == set(range(SHARDS))  # every shard answered by a replica on another server


async def test_a_caller_error_inside_a_search_many_reaches_the_caller_with_its_message_and_is_not_retried(etcd, etcd_root):
    async with loaded(etcd, etcd_root, replication=2) as (cluster, vectors):
        cluster.fakes[0].fail("Search", InvalidArgument("field 'n' is not an int here"))
        with pytest.raises(InvalidArgument, match="field 'n' is not an int here"):
            await cluster.client.search("docs", vectors[0], 5)
        refused = set(shards_asked(cluster.fakes[0]))
        assert refused and not refused & {s for fake in cluster.fakes[1:] for s in shards_asked(fake)}  # not retried


async def test_a_server_too_old_for_search_many_is_sent_lone_searches_from_then_on(etcd, etcd_root):
    async with loaded(etcd, etcd_root) as (cluster, vectors):
        cluster.fakes[0].fail("SearchMany", grpc.StatusCode.UNIMPLEMENTED)
        for query in (vectors[:2], vectors[2:5], vectors[5]):
            results = await cluster.client.search("docs", query, 4)
            assert_exact(results, vectors, np.atleast_2d(query), 4)
        assert len(cluster.fakes[0].requests("SearchMany")) == 1  # asked once, then remembered
        held = sorted(set(shards_asked(cluster.fakes[0])))  # (the refused SearchMany delivered none)
        assert len(held) == 2 and shards_asked(cluster.fakes[0]) == sorted(held * 3)
        assert [len(m.searches) for m in cluster.fakes[1].requests("SearchMany")] == [2, 2, 2]
