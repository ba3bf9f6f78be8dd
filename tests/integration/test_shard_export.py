"""ExportPoints, the source of a reindex: paging through a partition returns every point once, with its
stored vector and metadata, even while writes and deletes go on between the pages."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from quiver.v1 import shard_pb2, types_pb2
from quiver.wire.filters import metadata_from_proto, metadata_to_proto
from tests.data_fixtures import glove_subset
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches

INDEXES = {
    "hnsw": types_pb2.IndexSpec(hnsw=types_pb2.HnswParams()),
    "ivf_pq": types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=16, m=25, train_size=1000, refine=4)),
}


async def export_all(stub, limit: int, between_pages=None) -> dict[str, tuple[np.ndarray, dict]]:
    exported: dict[str, tuple[np.ndarray, dict]] = {}
    after, pages = -1, 0
    while True:
        page = await stub.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref(), after_slot=after, limit=limit))
        vectors = np.frombuffer(page.vectors, dtype="<f4").reshape(len(page.ids), -1)
        for n, point_id in enumerate(page.ids):
            assert point_id not in exported, f"{point_id} exported twice"
            # A page whose points have no metadata carries none.
            exported[point_id] = (vectors[n], metadata_from_proto(page.metadata[n]) if page.metadata else {})
        assert len(page.ids) <= limit
        after, pages = page.last_slot, pages + 1
        if page.done:
            return exported
        if between_pages is not None:
            await between_pages(pages)


@pytest.mark.parametrize("kind", INDEXES)
async def test_paging_through_a_partition_exports_every_point_once_with_its_vector_and_metadata(tmp_path, kind):
    base = glove_subset().base[:2500]
    ids = [f"p{i}" for i in range(len(base))]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1], INDEXES[kind])))
        await upsert_in_batches(stub, ref(), ids, base, [metadata_to_proto({"n": i}) for i in range(len(base))])
        await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=ids[:100]))  # freed slots are skipped
        exported = await export_all(stub, limit=300)
        assert sorted(exported) == sorted(ids[100:])
        normalised = base / np.linalg.norm(base, axis=1, keepdims=True)
        for point_id in ("p100", "p1234", "p2499"):
            vector, metadata = exported[point_id]
            n = int(point_id[1:])
            assert metadata == {"n": n}
            assert np.allclose(vector, normalised[n], atol=1e-5)


async def test_a_point_present_throughout_is_exported_once_though_writes_and_deletes_land_between_pages(tmp_path):
    base = glove_subset().base[:1500]
    ids = [f"p{i}" for i in range(1000)]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        await upsert_in_batches(stub, ref(), ids, base[:1000])
        deleted = set()

        async def churn(page: int) -> None:
            # Deletes free slots that new points then take; existing points are overwritten in place.
            gone = [f"p{i}" for i in range(900 - 10 * page, 910 - 10 * page)]
            deleted.update(gone)
            await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=gone))
            fresh = [f"new{page}-{i}" for i in range(10)]
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=fresh, vectors=packed(base[1000 + 10 * page:1010 + 10 * page])))
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["p5"], vectors=packed(base[1400:1401])))

        exported = await export_all(stub, limit=100, between_pages=churn)
        assert set(ids) - deleted <= set(exported)


async def test_an_export_page_larger_than_the_message_allows_is_refused_with_the_largest_page(tmp_path):
    async with running_shard(tmp_path, max_message_bytes=2**20) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(256)))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref(), after_slot=-1, limit=5000))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the largest page of 512 points for dimension 256" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref("nope"), after_slot=-1))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        empty = await stub.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref(), after_slot=-1))
        assert (list(empty.ids), empty.done, empty.total) == ([], True, 0)


async def test_an_ids_only_export_lists_every_point_once_without_vectors_or_metadata(tmp_path):
    base = glove_subset().base[:2500]
    ids = [f"p{i}" for i in range(len(base))]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1], INDEXES["hnsw"])))
        await upsert_in_batches(stub, ref(), ids, base, [metadata_to_proto({"n": i}) for i in range(len(base))])
        await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=ids[:10]))
        listed, after = [], -1
        while True:
            page = await stub.ExportPoints(shard_pb2.ExportPointsRequest(ref=ref(), after_slot=after, limit=2000, ids_only=True))
            assert page.vectors == b"" and not page.metadata
            listed += page.ids
            after = page.last_slot
            if page.done:
                break
        assert sorted(listed) == sorted(ids[10:]) and len(listed) == len(set(listed))
