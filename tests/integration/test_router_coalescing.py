"""Coalescing concurrent searches at the router, seen from the fake shards' request logs.

While a batch for one key is in flight (the fakes hold every Search), searches that differ in any option
that changes the shards' answer must not join it; identical ones must share the next shard request, and
every caller must get its own answer. Each caller sends a distinct query vector, so the rows of every shard
request say whose queries it carried.

The one look inside the router is `queued`: how many searches wait in its coalescer, so a test releases the
fakes only once the queue it means to test has formed, instead of sleeping for a guessed time.
"""
from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from quiver.errors import DeadlineExceeded
from quiver.v1 import router_pb2
from quiver.filters import Eq
from router.hashring import shard_for_key
from router.server import RouterServer
from tests.eventually import assert_eventually_async
from tests.fake_shard import FakeCluster, exact_top, fake_cluster, unit_rows

DIM = 8
N = 60


def queued(router: RouterServer) -> int:
    """Searches waiting in the router's coalescer."""
    return router.servicer.queued_searches


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        yield running


async def load(cluster: FakeCluster, name: str, seed: int, keyed: bool = False) -> np.ndarray:
    """N points; in a keyed collection (partitioned by "tenant") the even ones under tenant-a, the odd under tenant-b."""
    await cluster.client.create_collection(name, DIM, index="flat", shards=3, partition_key_field="tenant" if keyed else "")
    vectors = np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32)
    metadata = [{"n": i, "even": i % 2 == 0} for i in range(N)]
    if keyed:
        for key, parity in (("tenant-a", 0), ("tenant-b", 1)):
            rows = list(range(parity, N, 2))
            await cluster.client.upsert(name, [f"p{i}" for i in rows], vectors[rows], [metadata[i] for i in rows], partition_key=key)
    else:
        await cluster.client.upsert(name, [f"p{i}" for i in range(N)], vectors, metadata)
    cluster.clear_logs()
    return vectors


def search_requests(cluster: FakeCluster) -> list[Any]:
    return [r for fake in cluster.fakes for r in fake.requests("Search")]


async def until_searches_reach_shards(cluster: FakeCluster, count: int) -> None:
    def check() -> None:
        assert len(search_requests(cluster)) == count, f"{len(search_requests(cluster))} shard searches, expected {count}"

    await assert_eventually_async(check)


async def until_queued(cluster: FakeCluster, count: int) -> None:
    def check() -> None:
        assert queued(cluster.router) == count, f"{queued(cluster.router)} searches queued, expected {count}"

    await assert_eventually_async(check)


def callers_in(request: Any, queries: np.ndarray) -> frozenset[int]:
    """Which callers' query rows one shard request carried."""
    rows = np.frombuffer(request.queries, dtype="<f4").reshape(-1, DIM)
    return frozenset(int(np.flatnonzero((queries == row).all(axis=1))[0]) for row in rows)


BASE: dict[str, Any] = dict(collection="c1", k=5)
VARIANTS: dict[str, dict[str, Any]] = {
    "filter": dict(filter=Eq("even", True)),
    "k": dict(k=7),
    "params": dict(ef_search=32),
    "include_metadata": dict(include_metadata=True),
    "include_vectors": dict(include_vectors=True),
    "partition_key": dict(partition_key="tenant-a"),
    "allow_partial": dict(allow_partial=True),
    "collection": dict(collection="c2"),
}


async def test_searches_differing_in_one_option_never_share_a_shard_request_and_identical_ones_do(cluster):
    data = {"c1": await load(cluster, "c1", 0, keyed=True), "c2": await load(cluster, "c2", 1)}
    # Caller 0 leads, 1 and 2 are an identical pair (to the leader and each other), then one per variant.
    options = [BASE, BASE, BASE] + [{**BASE, **v} for v in VARIANTS.values()]
    queries = unit_rows(np.random.default_rng(2), len(options), DIM)

    def search(n: int):
        opts = dict(options[n])
        return asyncio.create_task(cluster.client.search(opts.pop("collection"), queries[n], **opts))

    for fake in cluster.fakes:
        fake.freeze("Search")
    tasks = [search(0)]
    await until_searches_reach_shards(cluster, 3)
    tasks += [search(1), search(2)]
    await until_queued(cluster, 2)
    tasks += [search(n) for n in range(3, len(options))]
    # Every variant has its own key, so none waits: each reaches its shards while the leader is held.
    expected_requests = 3 + 3 * (len(VARIANTS) - 1) + 1
    await until_searches_reach_shards(cluster, expected_requests)
    assert queued(cluster.router) == 2
    for fake in cluster.fakes:
        fake.release("Search")
    results = [r for [r] in await asyncio.gather(*tasks)]

    groups = {callers_in(r, queries) for r in search_requests(cluster)}
    assert groups == {frozenset({n}) for n in range(len(options)) if n not in (1, 2)} | {frozenset({1, 2})}
    assert all(len(r.queries) == 2 * 4 * DIM for r in search_requests(cluster) if callers_in(r, queries) == {1, 2})
    for n, (opts, result) in enumerate(zip(options, results)):
        vectors = data[opts["collection"]]
        rows = None
        if "partition_key" in opts or "filter" in opts:  # tenant-a holds the even points
            rows = set(range(0, N, 2))
        assert [int(i[1:]) for i in result.ids] == exact_top(vectors, queries[n], opts["k"], rows), (n, opts)
        assert all((h.metadata is not None) == opts.get("include_metadata", False) for h in result.hits)
        assert all((h.vector is not None) == opts.get("include_vectors", False) for h in result.hits)
        assert not result.partial and result.shards_asked == (1 if "partition_key" in opts else 3)


async def test_a_coalesced_search_gets_the_same_answer_as_alone(cluster):
    vectors = await load(cluster, "c1", 0)
    queries = unit_rows(np.random.default_rng(3), 9, DIM)
    alone = [r for [r] in [await cluster.client.search("c1", q, 6, include_metadata=True) for q in queries]]
    cluster.clear_logs()
    for fake in cluster.fakes:
        fake.freeze("Search")
    first = asyncio.create_task(cluster.client.search("c1", queries[0], 6, include_metadata=True))
    await until_searches_reach_shards(cluster, 3)
    rest = [asyncio.create_task(cluster.client.search("c1", q, 6, include_metadata=True)) for q in queries[1:]]
    await until_queued(cluster, 8)
    for fake in cluster.fakes:
        fake.release("Search")
    together = [r for [r] in await asyncio.gather(first, *rest)]
    assert len(search_requests(cluster)) == 6  # the leader's three, then one three-shard batch of eight
    assert [(r.ids, [h.metadata for h in r.hits]) for r in together] == [(r.ids, [h.metadata for h in r.hits]) for r in alone]
    assert [r.ids for r in together] == [[f"p{i}" for i in exact_top(vectors, q, 6)] for q in queries]


async def test_a_search_that_waited_in_the_queue_still_gets_its_partial_answer_before_its_deadline(cluster):
    vectors = await load(cluster, "c1", 0)
    cluster.fakes[2].freeze("Search")
    async with cluster.client_with_deadline(1.0) as short, cluster.client_with_deadline(4.0) as patient:
        leader = asyncio.create_task(short.search("c1", vectors[0], 5, allow_partial=True))
        await until_searches_reach_shards(cluster, 3)
        waiter = asyncio.create_task(patient.search("c1", vectors[1], 5, allow_partial=True))
        await until_queued(cluster, 1)
        [led] = await leader
        assert led.partial and led.shards_answered == 2
        try:
            [waited] = await waiter
        except DeadlineExceeded:
            pytest.fail("the queued search was not answered by the router before its deadline")
    assert waited.partial and (waited.shards_asked, waited.shards_answered) == (3, 2)


async def test_a_short_deadline_in_a_batch_does_not_cut_short_another_callers_search(cluster):
    vectors = await load(cluster, "c1", 0)
    for fake in cluster.fakes:
        fake.freeze("Search")
    leader = asyncio.create_task(cluster.client.search("c1", vectors[0], 5))
    await until_searches_reach_shards(cluster, 3)
    async with cluster.client_with_deadline(1.5) as hurried:
        patient = asyncio.create_task(cluster.client.search("c1", vectors[1], 5))  # 10 s deadline
        brief = asyncio.create_task(hurried.search("c1", vectors[2], 5))
        await until_queued(cluster, 2)
        cluster.fakes[1].delay("Search", 2.5)  # the batch's shard 1 answers after the hurried caller gave up
        for fake in cluster.fakes:
            fake.release("Search")
        await leader
        await asyncio.gather(brief, return_exceptions=True)
        [result] = await patient
    assert result.ids == [f"p{i}" for i in exact_top(vectors, vectors[1], 5)]


async def test_coalesced_searches_each_within_the_query_limit_are_not_refused_together(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, max_queries_per_request=4) as cluster:
        for fake in cluster.fakes:
            fake.max_queries_per_request = 4  # the same limit on both sides, as with the real defaults (10,000)
        vectors = await load(cluster, "c1", 0)
        for fake in cluster.fakes:
            fake.freeze("Search")
        leader = asyncio.create_task(cluster.client.search("c1", vectors[0], 5))
        await until_searches_reach_shards(cluster, 3)
        batch = [asyncio.create_task(cluster.client.search("c1", vectors[n : n + 3], 5)) for n in (1, 4)]
        await until_queued(cluster, 2)
        for fake in cluster.fakes:
            fake.release("Search")
        await leader
        answers = await asyncio.gather(*batch)
    assert [r.ids[0] for answer in answers for r in answer] == [f"p{n}" for n in range(1, 7)]


async def test_a_search_whose_deadline_passed_in_the_queue_is_never_sent_to_the_shards(cluster):
    vectors = await load(cluster, "c1", 0)
    for fake in cluster.fakes:
        fake.freeze("Search")
    leader = asyncio.create_task(cluster.client.search("c1", vectors[0], 5))
    await until_searches_reach_shards(cluster, 3)
    async with cluster.client_with_deadline(0.5) as hurried:
        expired = asyncio.create_task(hurried.search("c1", vectors[1], 5))
        await until_queued(cluster, 1)
        with pytest.raises(DeadlineExceeded):
            await expired
    for fake in cluster.fakes:
        fake.release("Search")
    await leader
    assert [callers_in(r, vectors) for r in search_requests(cluster)] == [frozenset({0})] * 3  # the leader's alone
    await assert_eventually_async(lambda: queued(cluster.router) == 0)


async def test_searches_past_the_routers_queue_budget_are_refused_at_once_with_a_retry_hint(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1, max_queued_searches=2, retry_after_s=0.3) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        await cluster.client.upsert("docs", ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        cluster.fakes[0].freeze("Search")
        request = router_pb2.RouterSearchRequest(collection="docs", queries=np.ones(DIM, "<f4").tobytes(), k=1)
        first = asyncio.ensure_future(cluster.stub.Search(request, timeout=20))  # sent: the fake holds it
        await assert_eventually_async(lambda: len(cluster.fakes[0].requests("Search")) == 1)
        queued = [asyncio.ensure_future(cluster.stub.Search(request, timeout=20)) for _ in range(2)]
        await assert_eventually_async(lambda: cluster.router.servicer.queued_searches == 2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub.Search(request, timeout=20)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "router is overloaded" in refused.value.details()
        assert ("grpc-retry-pushback-ms", "300") in tuple(refused.value.trailing_metadata())
        cluster.fakes[0].release("Search")
        answers = await asyncio.gather(first, *queued)
        assert all(r.results[0].ids for r in answers)


async def test_with_deadline_admission_a_search_the_queue_would_make_late_is_refused_at_once(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1, deadline_admission=True) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        await cluster.client.upsert("docs", ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        request = router_pb2.RouterSearchRequest(collection="docs", queries=np.ones(DIM, "<f4").tobytes(), k=1)
        cluster.fakes[0].delay("Search", 0.5)
        for _ in range(3):  # measured: a batch takes ~0.5 s now (three batches: enough to refuse on)
            await cluster.stub.Search(request, timeout=5)
        first = asyncio.ensure_future(cluster.stub.Search(request, timeout=5))
        await assert_eventually_async(lambda: len(cluster.fakes[0].requests("Search")) == 4)
        behind = asyncio.ensure_future(cluster.stub.Search(request, timeout=5))  # queued: fits in 5 s
        await assert_eventually_async(lambda: cluster.router.servicer.queued_searches == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub.Search(request, timeout=0.6)  # third in line: ~1.5 s, past its 0.6 s
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "answered in about" in refused.value.details()
        assert all(r.results[0].ids for r in await asyncio.gather(first, behind))


async def test_deadline_admission_ignores_a_batch_time_measured_before_a_quiet_spell(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1, batch_estimate_max_age_s=0.5) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        await cluster.client.upsert("docs", ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        request = router_pb2.RouterSearchRequest(collection="docs", queries=np.ones(DIM, "<f4").tobytes(), k=1)
        cluster.fakes[0].delay("Search", 1.0)
        await cluster.stub.Search(request, timeout=5)  # measured: a batch took ~1 s
        cluster.fakes[0].heal()
        await asyncio.sleep(0.6)  # quiet for longer than the estimate is trusted
        cluster.fakes[0].freeze("Search")
        first = asyncio.ensure_future(cluster.stub.Search(request, timeout=5))
        await assert_eventually_async(lambda: len(cluster.fakes[0].requests("Search")) == 2)
        behind = asyncio.ensure_future(cluster.stub.Search(request, timeout=5))
        await assert_eventually_async(lambda: cluster.router.servicer.queued_searches == 1)
        # On the old 1 s estimate this one (third in line, 1.5 s left) would be refused; it is queued.
        third = asyncio.ensure_future(cluster.stub.Search(request, timeout=1.5))
        await assert_eventually_async(lambda: cluster.router.servicer.queued_searches == 2)
        cluster.fakes[0].release("Search")
        assert all(r.results[0].ids for r in await asyncio.gather(first, behind, third))


async def test_a_search_admitted_and_then_failed_by_its_deadline_makes_admission_stricter(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=1, deadline_admission=True) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
        await cluster.client.upsert("docs", ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        lead = router_pb2.RouterSearchRequest(collection="docs", queries=np.ones(DIM, "<f4").tobytes(), k=1)
        late = router_pb2.RouterSearchRequest(collection="docs", queries=np.full(DIM, 2.0, "<f4").tobytes(), k=1)
        cluster.fakes[0].delay("Search", 0.3)
        await cluster.stub.Search(lead, timeout=5)  # measured: a batch takes ~0.3 s now
        share_before = cluster.router.servicer.admission_share.value
        cluster.fakes[0].freeze("Search")
        first = asyncio.ensure_future(cluster.stub.Search(lead, timeout=10))
        await assert_eventually_async(lambda: len(cluster.fakes[0].requests("Search")) == 2)
        # Admitted: ~0.3 s left of the batch in flight plus its own ~0.3 s is within its share of 1.5 s.
        behind = asyncio.ensure_future(cluster.stub.Search(late, timeout=1.5))
        await assert_eventually_async(lambda: cluster.router.servicer.queued_searches == 1)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await behind  # the batch ahead overruns past this search's deadline
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cluster.fakes[0].release("Search")
        await first
        assert late.queries not in [r.queries for r in cluster.fakes[0].requests("Search")]
        assert cluster.router.servicer.admission_share.value < share_before  # the estimates fell short: admit less
