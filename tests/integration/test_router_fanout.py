"""The router's scatter-gather against fake shards: merged results keep each id's own metadata and vector,
a missing shard gives a partial answer (or UNAVAILABLE) from the router before the caller's deadline,
shards' caller errors keep their code, and a bad request is refused before any shard is asked."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from quiver.errors import ERRORS_BY_CODE, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from quiver.v1 import router_pb2, types_pb2
from quiver.wire.packed_hits import HitBatch
from tests.eventually import assert_eventually_async
from tests.fake_shard import FakeCluster, exact_top, fake_cluster, unit_rows

DIM = 8
N = 60


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, max_k=100, max_queries_per_request=4) as running:
        yield running


async def load(cluster: FakeCluster, name: str = "docs", n: int = N, seed: int = 0) -> np.ndarray:
    """A 3-shard collection of n points p0.. with metadata {"n": i, "tag": "t{i}"}; returns the vectors."""
    await cluster.client.create_collection(name, DIM, index="flat", shards=3, model="m1")
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)  # not unit: the shards normalise
    await cluster.client.upsert(name, [f"p{i}" for i in range(n)], vectors, [{"n": i, "tag": f"t{i}"} for i in range(n)])
    cluster.clear_logs()
    return vectors


def rows_on(cluster: FakeCluster, fakes: list[int], name: str = "docs") -> set[int]:
    return {int(i[1:]) for f in fakes for i in cluster.fakes[f].point_ids(name)}


# -- merge ----------------------------------------------------------------------------------------


async def test_merged_hits_carry_their_own_metadata_and_stored_vector_across_three_shards(cluster):
    vectors = await load(cluster)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = unit_rows(np.random.default_rng(1), 4, DIM)
    results = await cluster.client.search("docs", queries, 12, include_metadata=True, include_vectors=True)
    shard_of = {i: f for f in range(3) for i in rows_on(cluster, [f])}
    assert len({shard_of[int(h.id[1:])] for r in results for h in r.hits}) == 3  # the merge had three shards to mix
    for query, result in zip(queries, results):
        assert [int(i[1:]) for i in result.ids] == exact_top(vectors, query, 12)
        for hit in result.hits:
            n = int(hit.id[1:])
            assert hit.metadata == {"n": n, "tag": f"t{n}"}
            np.testing.assert_allclose(hit.vector, normed[n], atol=1e-6)
        assert result.shards_answered == 3 and not result.partial


async def test_fewer_points_than_k_with_an_empty_shard_merges_to_every_point_with_its_own_metadata(cluster):
    await cluster.client.create_collection("few", DIM, index="flat", shards=3)
    vectors = unit_rows(np.random.default_rng(2), 2, DIM)
    await cluster.client.upsert("few", ["a", "b"], vectors, [{"name": "a"}, {"name": "b"}])
    [result] = await cluster.client.search("few", vectors[1], 10, include_metadata=True, include_vectors=True)
    assert result.ids == ["b", "a"]
    assert [h.metadata for h in result.hits] == [{"name": "b"}, {"name": "a"}]
    np.testing.assert_allclose(np.stack([h.vector for h in result.hits]), vectors[::-1], atol=1e-6)


def answer_of(response: router_pb2.RouterSearchResponse) -> list[tuple[list[str], list[float], int]]:
    """Each query's (ids, scores, strategy), from whichever form the router answered in."""
    if response.HasField("hits"):
        packed = HitBatch.from_proto(response.hits)
        return list(zip(packed.id_lists(), packed.score_lists(), packed.strategies.tolist()))
    return [(list(r.ids), list(r.scores), r.strategy) for r in response.results]


@pytest.mark.parametrize("shards_that_pack", [(0, 1, 2), (0, 2), ()], ids=["all", "one-too-old", "none"])
async def test_packed_and_message_answers_hold_the_same_exact_hits_for_batches_and_single_queries(cluster, shards_that_pack):
    """A rolling upgrade mixes shards that pack their answers and ones too old to: every form is the same."""
    vectors = await load(cluster)
    for n, fake in enumerate(cluster.fakes):
        fake.packs_hits = n in shards_that_pack
    queries = unit_rows(np.random.default_rng(3), 4, DIM)
    for rows in (queries, queries[:1]):
        request = dict(collection="docs", queries=rows.astype("<f4").tobytes(), k=12)
        as_messages = await cluster.stub.Search(router_pb2.RouterSearchRequest(**request), timeout=10)
        as_packed = await cluster.stub.Search(router_pb2.RouterSearchRequest(**request, packed_hits=True), timeout=10)
        assert len(as_messages.results) == len(rows) and not as_messages.HasField("hits")
        assert as_packed.HasField("hits") and not as_packed.results
        assert answer_of(as_packed) == answer_of(as_messages)
        assert [[int(i[1:]) for i in ids] for ids, _, _ in answer_of(as_packed)] == [exact_top(vectors, q, 12) for q in rows]
        assert as_packed.coverage.shards_answered == 3
    results = await cluster.client.search("docs", queries, 12)  # the client asks for packed hits
    assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, 12) for q in queries]


async def test_the_router_asks_shards_for_packed_hits_only_for_batches_without_metadata_or_vectors(cluster):
    await load(cluster)
    queries = unit_rows(np.random.default_rng(4), 3, DIM)
    asked = {}
    for name, rows, options in [
        ("batch", queries, {}), ("one query", queries[:1], {}),
        ("batch with metadata", queries, {"include_metadata": True}), ("batch with vectors", queries, {"include_vectors": True}),
    ]:
        await cluster.client.search("docs", rows, 5, **options)
        asked[name] = {r.packed_hits for _, r in cluster.data_requests()}
        cluster.clear_logs()
    assert asked == {"batch": {True}, "one query": {False}, "batch with metadata": {False}, "batch with vectors": {False}}


async def test_get_returns_each_id_once_in_request_order_with_its_own_metadata_and_vector(cluster):
    vectors = await load(cluster)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    wanted = ["p7", "p3", "missing", "p59", "p3", "p0", "p31"]
    points = await cluster.client.get("docs", wanted, include_vectors=True)
    assert [p.id for p in points] == ["p7", "p3", "p59", "p0", "p31"]
    for point in points:
        n = int(point.id[1:])
        assert point.metadata == {"n": n, "tag": f"t{n}"}
        np.testing.assert_allclose(point.vector, normed[n], atol=1e-6)


# -- partial results and deadlines ------------------------------------------------------------------


async def test_a_frozen_shard_gives_the_routers_partial_answer_or_unavailable_before_the_callers_deadline(cluster):
    vectors = await load(cluster)
    cluster.fakes[2].freeze("Search")
    queries = vectors[:3]
    async with cluster.client_with_deadline(3.0) as client:
        # Two keys, so both run at once; the client's own deadline would raise DeadlineExceeded instead.
        partial, refused = await asyncio.gather(
            client.search("docs", queries, 5, allow_partial=True),
            client.search("docs", queries, 5),
            return_exceptions=True,
        )
    assert not isinstance(partial, BaseException), partial
    assert all(r.partial and r.shards_asked == 3 and r.shards_answered == 2 for r in partial)
    answering = rows_on(cluster, [0, 1])
    assert [[int(i[1:]) for i in r.ids] for r in partial] == [exact_top(vectors, q, 5, answering) for q in queries]
    assert isinstance(refused, Unavailable), refused
    assert "shard 2" in str(refused)
    # The router told the client's retry policy not to retry (negative pushback): the frozen shard had the
    # whole deadline already, so the caller gets this UNAVAILABLE, not a second wait ending in DEADLINE_EXCEEDED.
    assert len(cluster.fakes[2].requests("Search")) == 2


async def test_a_shard_answering_unavailable_gives_a_partial_answer_only_when_allowed(cluster):
    vectors = await load(cluster)
    cluster.fakes[0].fail("Search", grpc.StatusCode.UNAVAILABLE)
    [result] = await cluster.client.search("docs", vectors[0], 5, allow_partial=True)
    assert result.partial and (result.shards_asked, result.shards_answered) == (3, 2)
    with pytest.raises(Unavailable, match="1 of 3 shards did not answer"):
        await cluster.client.search("docs", vectors[0], 5)


async def test_with_every_shard_answering_unavailable_a_partial_search_is_unavailable(cluster):
    vectors = await load(cluster)
    for fake in cluster.fakes:
        fake.fail("Search", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable, match="3 of 3 shards did not answer"):
        await cluster.client.search("docs", vectors[0], 5, allow_partial=True)


async def test_with_every_shard_server_stopped_a_partial_search_is_unavailable(cluster):
    vectors = await load(cluster)
    for fake in cluster.fakes:
        await fake.stop()
    with pytest.raises(Unavailable, match="3 of 3 shards did not answer"):
        await cluster.client.search("docs", vectors[0], 5, allow_partial=True)


# -- errors ---------------------------------------------------------------------------------------

CALLER_CODES = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
]


@pytest.mark.parametrize("code", CALLER_CODES, ids=lambda c: c.name)
async def test_a_shards_caller_error_reaches_the_caller_with_its_own_code(cluster, code):
    vectors = await load(cluster)
    expected = ERRORS_BY_CODE[code]
    calls = {
        "Search": lambda: cluster.client.search("docs", vectors[0], 5, allow_partial=True),
        "Get": lambda: cluster.client.get("docs", ["p1"]),
        "Upsert": lambda: cluster.client.upsert("docs", [f"p{i}" for i in range(10)], vectors[:10]),
        "Delete": lambda: cluster.client.delete("docs", ["p1"]),
    }
    for method, call in calls.items():
        cluster.fakes[1].fail(method, code)
        with pytest.raises(expected, match=f"injected {code.name} in {method}"):
            await call()
        cluster.fakes[1].heal()


async def test_a_shards_retry_pushback_reaches_the_caller_with_its_resource_exhausted(cluster):
    await load(cluster)
    cluster.fakes[1].fail("Upsert", ResourceExhausted("disk full at /data/wal", retry_after_s=2.5))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub.Upsert(upsert(12))  # 12 ids: some land on every shard
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk full at /data/wal" in refused.value.details()
    assert ("grpc-retry-pushback-ms", "2500") in tuple(refused.value.trailing_metadata())


async def test_a_shards_overload_refusal_reaches_the_caller_before_the_other_shards_answer(cluster):
    await load(cluster)
    cluster.fakes[0].freeze("Upsert")  # this shard's part is slow to commit
    cluster.fakes[1].fail("Upsert", ResourceExhausted("write queue full", retry_after_s=0.5))
    request = upsert(12)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub.Upsert(request, timeout=20)  # answered while shard 0 still holds its part
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "write queue full" in refused.value.details() and "resend all of it" in refused.value.details()
    # The part still in flight is still counted against the router's write budget, until it is answered.
    assert cluster.router.servicer.queued_write_bytes == request.ByteSize()
    cluster.fakes[0].release("Upsert")
    await assert_eventually_async(lambda: cluster.router.servicer.queued_write_bytes == 0)


def search(**fields) -> router_pb2.RouterSearchRequest:
    defaults = dict(collection="docs", queries=np.ones((1, DIM), "<f4").tobytes(), k=5)
    return router_pb2.RouterSearchRequest(**{**defaults, **fields})


def upsert(n: int = 2, **fields) -> router_pb2.RouterUpsertRequest:
    defaults = dict(collection="docs", ids=[f"new{i}" for i in range(n)], vectors=np.ones((n, DIM), "<f4").tobytes())
    return router_pb2.RouterUpsertRequest(**{**defaults, **fields})


BAD_REQUESTS = {
    "search with a wrong dimension": ("Search", search(queries=np.ones(DIM - 1, "<f4").tobytes()), InvalidArgument),
    "search with no queries": ("Search", search(queries=b""), InvalidArgument),
    "search with k=0": ("Search", search(k=0), InvalidArgument),
    "search with k above max_k": ("Search", search(k=101), InvalidArgument),
    "search with too many queries": ("Search", search(queries=np.ones((5, DIM), "<f4").tobytes()), InvalidArgument),
    "search with a NaN query": ("Search", search(queries=np.full(DIM, np.nan, "<f4").tobytes()), InvalidArgument),
    "search with a zero query under cosine": ("Search", search(queries=np.zeros(DIM, "<f4").tobytes()), InvalidArgument),
    "search with another model": ("Search", search(model="m2"), FailedPrecondition),
    "search with a malformed filter": ("Search", search(filter=types_pb2.Filter(eq=types_pb2.FieldEq(field="x"))), InvalidArgument),
    "search of a missing collection": ("Search", search(collection="nope"), NotFound),
    "packed search asking for metadata": ("Search", search(packed_hits=True, include_metadata=True), InvalidArgument),
    "packed search asking for vectors": ("Search", search(packed_hits=True, include_vectors=True), InvalidArgument),
    "upsert with no ids": ("Upsert", upsert(0), InvalidArgument),
    "upsert with an empty id": ("Upsert", upsert(2, ids=["a", ""]), InvalidArgument),
    "upsert with a repeated id": ("Upsert", upsert(2, ids=["a", "a"]), InvalidArgument),
    "upsert with a wrong dimension": ("Upsert", upsert(2, vectors=np.ones((2, DIM + 1), "<f4").tobytes()), InvalidArgument),
    "upsert with fewer vectors than ids": ("Upsert", upsert(2, vectors=np.ones((1, DIM), "<f4").tobytes()), InvalidArgument),
    "upsert with a zero vector": ("Upsert", upsert(2, vectors=np.zeros((2, DIM), "<f4").tobytes()), InvalidArgument),
    "upsert with one metadata for two ids": ("Upsert", upsert(2, metadata=[types_pb2.Metadata()]), InvalidArgument),
    "upsert with another model": ("Upsert", upsert(2, model="m2"), FailedPrecondition),
    "get with an empty id": ("Get", router_pb2.RouterGetRequest(collection="docs", ids=["p1", ""]), InvalidArgument),
    "delete with no ids and no filter": ("Delete", router_pb2.RouterDeleteRequest(collection="docs"), InvalidArgument),
    "delete with an empty id": ("Delete", router_pb2.RouterDeleteRequest(collection="docs", ids=[""]), InvalidArgument),
}


async def test_bad_requests_are_refused_with_their_code_before_any_shard_is_asked(cluster):
    await load(cluster)
    wrong = []
    for name, (method, request, expected) in BAD_REQUESTS.items():
        try:
            await getattr(cluster.stub, method)(request, timeout=10)
            outcome = "OK"
        except grpc.aio.AioRpcError as error:
            outcome = error.code().name
        asked = cluster.data_requests()
        if outcome != [c.name for c, e in ERRORS_BY_CODE.items() if e is expected][0] or asked:
            wrong.append(f"{name}: {outcome}, {len(asked)} shard requests")
        cluster.clear_logs()
    assert not wrong, wrong
