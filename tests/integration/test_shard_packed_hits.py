"""A shard server asked for packed hits answers a batch with the same hits, strategies, cost estimates and
filter counts as in per-query messages, for plain and filtered searches alike."""
from __future__ import annotations

import numpy as np

from quiver.v1 import shard_pb2, types_pb2
from quiver.wire.packed_hits import HitBatch
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches

DIM = 16
N = 600


def as_tuples(response: shard_pb2.SearchResponse) -> list[tuple]:
    if response.HasField("hits"):
        hits = HitBatch.from_proto(response.hits)
        return list(zip(hits.id_lists(), hits.score_lists(), hits.strategies.tolist(), hits.estimated_cost_us.tolist(), hits.filter_matches.tolist()))
    return [(list(r.ids), list(r.scores), r.strategy, r.estimated_cost_us, r.filter_matches) for r in response.results]


async def test_a_packed_answer_holds_what_the_per_query_messages_hold(tmp_path):
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [f"pt-{i}-é" for i in range(N)]  # multi-byte UTF-8 in every id
    metadata = [types_pb2.Metadata(fields={"n": types_pb2.Value(int_value=i)}) for i in range(N)]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM)))
        await upsert_in_batches(stub, ref(), ids, vectors, metadata)
        queries = packed(rng.standard_normal((8, DIM)))
        few = types_pb2.Filter(range=types_pb2.FieldRange(field="n", lt=30))  # 5%: scanned exactly
        for flt in (None, few):
            request = dict(ref=ref(), queries=queries, k=10, filter=flt)
            as_messages = await stub.Search(shard_pb2.SearchRequest(**request))
            as_packed = await stub.Search(shard_pb2.SearchRequest(**request, packed_hits=True))
            assert not as_packed.results and as_packed.HasField("hits")
            assert as_tuples(as_packed) == as_tuples(as_messages)
            assert all(len(hit_ids) == 10 for hit_ids, *_ in as_tuples(as_packed))
        filtered = as_tuples(as_packed)
        assert {matches for *_, matches in filtered} == {30}
        assert all(int(i.split("-")[1]) < 30 for hit_ids, *_ in filtered for i in hit_ids)
