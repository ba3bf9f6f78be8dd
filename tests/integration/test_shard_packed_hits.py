"""A shard server asked for packed hits answers a batch with the same hits, strategies, cost estimates and
filter counts as in per-query messages, for plain and filtered searches alike."""
from __future__ import annotations

import numpy as np
import pytest

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


INDEXES = {
    "hnsw": types_pb2.IndexSpec(hnsw=types_pb2.HnswParams()),
    # Trained on its 600 points at once (train_size), so the searches below run on PQ codes, then re-ranked.
    "ivf_pq": types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=8, m=4, train_size=600, refine=4)),
    "flat": types_pb2.IndexSpec(flat=types_pb2.FlatParams()),
}


@pytest.mark.parametrize("kind", INDEXES)
async def test_a_packed_answer_holds_what_the_per_query_messages_hold(tmp_path, kind):
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [f"pt-{i}-é" for i in range(N)]  # multi-byte UTF-8 in every id
    metadata = [types_pb2.Metadata(fields={"n": types_pb2.Value(int_value=i)}) for i in range(N)]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM, INDEXES[kind])))
        await upsert_in_batches(stub, ref(), ids, vectors, metadata)
        if kind == "ivf_pq":
            await stub.Train(shard_pb2.TrainRequest(ref=ref()))
        queries = packed(rng.standard_normal((8, DIM)))
        few = types_pb2.Filter(range=types_pb2.FieldRange(field="n", lt=30))  # 5%: scanned exactly
        for flt in (None, few):
            request = dict(ref=ref(), queries=queries, k=10, filter=flt)
            as_messages = await stub.Search(shard_pb2.SearchRequest(**request))
            as_packed = await stub.Search(shard_pb2.SearchRequest(**request, packed_hits=True))
            assert not as_packed.results and as_packed.HasField("hits")
            assert as_tuples(as_packed) == as_tuples(as_messages)
            assert all(len(hit_ids) == 10 for hit_ids, *_ in as_tuples(as_packed))
            if flt is None:  # the index's own search ran (IVF-PQ trained), not an exact fallback
                want = types_pb2.EXACT if kind == "flat" else types_pb2.ANN
                assert {strategy for _, _, strategy, *_ in as_tuples(as_packed)} == {want}
        filtered = as_tuples(as_packed)
        assert {matches for *_, matches in filtered} == {30}
        assert all(int(i.split("-")[1]) < 30 for hit_ids, *_ in filtered for i in hit_ids)


async def test_packed_answers_name_the_current_ids_after_deletes_reuse_labels_and_when_fewer_points_than_k(tmp_path):
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((12, DIM)).astype(np.float32)
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM)))
        await upsert_in_batches(stub, ref(), [f"old{i}" for i in range(8)], vectors[:8])
        await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=["old1", "old4", "old6"]))
        await upsert_in_batches(stub, ref(), ["新しい", "n\x00ul", "plain"], vectors[8:11])  # into the freed labels
        live = {"old0", "old2", "old3", "old5", "old7", "新しい", "n\x00ul", "plain"}
        request = dict(ref=ref(), queries=packed(vectors[[0, 8, 9]]), k=10)  # k above the 8 points held
        as_messages = await stub.Search(shard_pb2.SearchRequest(**request))
        as_packed = await stub.Search(shard_pb2.SearchRequest(**request, packed_hits=True))
        assert as_tuples(as_packed) == as_tuples(as_messages)
        answers = as_tuples(as_packed)
        assert all(set(hit_ids) == live for hit_ids, *_ in answers)
        assert [hit_ids[0] for hit_ids, *_ in answers] == ["old0", "新しい", "n\x00ul"]
