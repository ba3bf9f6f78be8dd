"""Read-your-writes on one shard: upsert-replace, delete by id, delete by filter, get."""
from __future__ import annotations

import numpy as np

from quiver.filters import Eq
from quiver.v1 import shard_pb2, types_pb2
from quiver.wire.filters import filter_to_proto, metadata_to_proto
from tests.data_fixtures import glove_subset
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches

INDEXES = {
    "hnsw": types_pb2.IndexSpec(hnsw=types_pb2.HnswParams()),
    "flat": types_pb2.IndexSpec(flat=types_pb2.FlatParams()),
    "ivf_pq": types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=32, m=25, train_size=2000, refine=4)),
}


async def top1(stub, vector: np.ndarray) -> str:
    response = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(vector[None, :]), k=1))
    return response.results[0].ids[0] if response.results[0].ids else ""


async def test_upsert_replace_delete_and_filter_delete_are_visible_in_the_next_search(tmp_path):
    data = glove_subset()
    base = data.base[:4000]
    ids = [f"p{i}" for i in range(len(base))]
    metadata = [metadata_to_proto({"group": i % 10}) for i in range(len(base))]
    for kind, index in INDEXES.items():
        async with running_shard(tmp_path / kind) as (_, stub):
            await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1], index)))
            await upsert_in_batches(stub, ref(), ids, base, metadata, batch=1000)
            assert await top1(stub, base[7]) == "p7", kind

            # Replace p7's vector with p3000's: the old vector must never come back.
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["p7"], vectors=packed(base[3000:3001])))
            assert await top1(stub, base[7]) != "p7", kind
            response = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[3000:3001]), k=2))
            assert set(response.results[0].ids) == {"p7", "p3000"}, kind

            deleted = await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=["p3000", "missing"]))
            assert deleted.deleted == 1
            assert await top1(stub, base[3000]) == "p7", kind

            by_filter = await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), filter=filter_to_proto(Eq("group", 5))))
            assert by_filter.deleted == 400
            response = await stub.Search(
                shard_pb2.SearchRequest(ref=ref(), queries=packed(base[5:6]), k=50, include_metadata=True)
            )
            assert "p5" not in response.results[0].ids
            assert all(m.fields["group"].int_value != 5 for m in response.results[0].metadata)

            got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=["p1", "p5", "p7"], include_vectors=True))
            assert [p.id for p in got.points] == ["p1", "p7"]
            stored = np.frombuffer(got.points[1].vector, dtype="<f4")
            expected = base[3000] / np.linalg.norm(base[3000])
            assert np.allclose(stored, expected, atol=0.05 if kind == "ivf_pq" else 1e-5), kind

            stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
            assert stats.point_count == len(base) - 1 - 400


async def test_deleted_labels_are_reused_so_index_memory_stays_bounded_under_churn(tmp_path):
    data = glove_subset()
    base = data.base[:2000]
    async with running_shard(tmp_path) as (server, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        for round_number in range(5):
            ids = [f"r{round_number}-{i}" for i in range(len(base))]
            await upsert_in_batches(stub, ref(), ids, base, batch=1000)
            if round_number:
                old = [f"r{round_number - 1}-{i}" for i in range(len(base))]
                await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=old))
        partition = server.registry.all()[0]
        assert partition.state.ids.slots <= 2 * len(base)
        response = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:1]), k=1))
        assert response.results[0].ids[0] == "r4-0"
