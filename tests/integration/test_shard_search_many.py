"""A shard server's SearchMany answers each of its searches exactly as a lone Search would, refusals
included (code, message, trailing metadata), whatever the partitions' metrics, and a refused search costs
the others nothing."""
from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from quiver.errors import RETRY_PUSHBACK_KEY
from quiver.logs import REQUEST_ID_KEY
from quiver.v1 import shard_pb2, types_pb2
from quiver.wire import search_outcomes
from shard.admission import AdmissionBudgets
from tests.shard_harness import packed, ref, running_shard, upsert_in_batches

DIM = 12
N = 300


async def lone(stub: Any, search: shard_pb2.SearchRequest) -> tuple[Any, ...]:
    """What one Search ends with: its answer, or its code, details and trailing metadata."""
    try:
        return ("ok", await stub.Search(search))
    except grpc.aio.AioRpcError as error:
        return (error.code(), error.details(), tuple((k, v) for k, v in error.trailing_metadata() if k != REQUEST_ID_KEY))


def of_outcome(outcome: shard_pb2.SearchOutcome) -> tuple[Any, ...]:
    if outcome.code == 0:
        return ("ok", outcome.response)
    code = search_outcomes.code_of(outcome)
    return (code, outcome.message, tuple((e.key, e.value) for e in outcome.trailing))


async def create(stub: Any, collection: str, shard: int, metric: int, vectors: np.ndarray, seed: int) -> None:
    part = ref(collection, shard)
    index = types_pb2.IndexSpec(hnsw=types_pb2.HnswParams())
    await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=shard_pb2.PartitionSpec(ref=part, dim=DIM, metric=metric, index=index)))
    ids = [f"{collection}-{shard}-{i}" for i in range(len(vectors))]
    metadata = [types_pb2.Metadata(fields={"n": types_pb2.Value(int_value=i)}) for i in range(len(vectors))]
    await upsert_in_batches(stub, part, ids, vectors, metadata)


async def test_each_search_of_a_search_many_gets_what_its_lone_search_gets_refusals_included(tmp_path):
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((4, N, DIM)).astype(np.float32) * 3  # not unit: cosine partitions normalise
    async with running_shard(tmp_path, max_k=50) as (_, stub):
        for shard in range(3):
            await create(stub, "docs", shard, types_pb2.COSINE, vectors[shard], shard)
        # The same query bytes to an L2 partition: the queries prepared (normalised) for cosine must not be its.
        await create(stub, "plain", 0, types_pb2.L2, vectors[3], 3)
        queries = packed(rng.standard_normal((3, DIM)) * 5)
        every = dict(queries=queries, k=7)
        searches = [
            shard_pb2.SearchRequest(ref=ref("docs", 0), **every),
            shard_pb2.SearchRequest(ref=ref("plain", 0), **every),
            shard_pb2.SearchRequest(ref=ref("docs", 9), **every),  # no such partition: NOT_FOUND
            shard_pb2.SearchRequest(ref=ref("docs", 1), **every, include_metadata=True, include_vectors=True),
            shard_pb2.SearchRequest(ref=ref("docs", 2), queries=queries, k=51),  # past max_k: INVALID_ARGUMENT
            shard_pb2.SearchRequest(ref=ref("docs", 2), queries=queries[:-4], k=7),  # not whole vectors
            shard_pb2.SearchRequest(ref=ref("docs", 2), **every, packed_hits=True,
                                    filter=types_pb2.Filter(range=types_pb2.FieldRange(field="n", lt=20))),
        ]
        alone = [await lone(stub, s) for s in searches]
        many = await stub.SearchMany(shard_pb2.SearchManyRequest(searches=searches))
        together = [of_outcome(o) for o in many.outcomes]
    assert [a[0] for a in alone] == [
        "ok", "ok", grpc.StatusCode.NOT_FOUND, "ok", grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, "ok",
    ]
    assert together == alone
    assert {len(r.ids) for a in alone if a[0] == "ok" for r in a[1].results} == {7}


async def test_a_search_many_past_the_query_budget_refuses_the_overflow_with_a_retry_pushback_and_answers_the_rest(tmp_path):
    """Each search is admitted on its own: with room for one batch of queries in flight, one search of
    three runs and the others are refused as a lone search past the budget is, pushback included."""
    rng = np.random.default_rng(12)
    async with running_shard(tmp_path, admission=AdmissionBudgets(queries_in_flight=4, retry_after_s=0.25)) as (server, stub):
        for shard in range(3):
            await create(stub, "docs", shard, types_pb2.COSINE, rng.standard_normal((N, DIM)).astype(np.float32), shard)
        queries = packed(rng.standard_normal((4, DIM)))
        many = await stub.SearchMany(shard_pb2.SearchManyRequest(
            searches=[shard_pb2.SearchRequest(ref=ref("docs", s), queries=queries, k=5) for s in range(3)]
        ))
        codes = [o.code for o in many.outcomes]
        assert sorted(codes) == [0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
        for outcome in many.outcomes:
            if outcome.code:
                assert "overloaded with searches" in outcome.message
                assert (RETRY_PUSHBACK_KEY, "250") in [(e.key, e.value) for e in outcome.trailing]
            else:
                assert [len(r.ids) for r in outcome.response.results] == [5] * 4
        assert server.admission.queries == 0  # every admitted search gave its budget back
        again = await stub.Search(shard_pb2.SearchRequest(ref=ref("docs", 0), queries=queries, k=5))
        assert len(again.results) == 4
