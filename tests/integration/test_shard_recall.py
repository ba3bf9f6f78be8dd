"""Recall of each index kind over gRPC on real GloVe vectors, against exact brute force."""
from __future__ import annotations

import numpy as np
import pytest

from loadtest.datasets import recall_at_k
from quiver.v1 import shard_pb2, types_pb2
from tests.data_fixtures import glove_subset
from tests.eventually import assert_eventually_async
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches


async def _trained(stub) -> bool:
    return (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0].trained


async def search_ids(stub, part, queries: np.ndarray, k: int, id_to_row: dict[str, int], **params) -> np.ndarray:
    response = await stub.Search(
        shard_pb2.SearchRequest(ref=part, queries=packed(queries), k=k, params=types_pb2.SearchParams(**params))
    )
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for row, result in enumerate(response.results):
        found[row, : len(result.ids)] = [id_to_row[i] for i in result.ids]
    return found


@pytest.mark.parametrize(
    ("index", "minimum"),
    [
        (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=16, ef_construction=200, ef_search=128)), 0.95),
        (types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=128, m=25, nbits=8, nprobe=32, train_size=10_000, refine=8)), 0.85),
        (types_pb2.IndexSpec(flat=types_pb2.FlatParams()), 1.0),
    ],
    ids=["hnsw", "ivf_pq_refine", "flat"],
)
async def test_recall_at_10_meets_the_bar_against_brute_force(tmp_path, index, minimum):
    data = glove_subset()
    ids = [f"w{i}" for i in range(len(data.base))]
    id_to_row = {i: row for row, i in enumerate(ids)}
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(data.base.shape[1], index)))
        await upsert_in_batches(stub, ref(), ids, data.base)
        # IVF-PQ trains in the background once train_size points are buffered; searches are exact until then.
        await assert_eventually_async(lambda: _trained(stub), timeout=120)
        found = await search_ids(stub, ref(), data.queries, 10, id_to_row)
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
    recall = recall_at_k(found, data.ground_truth, 10)
    assert recall >= minimum, f"recall@10 {recall:.3f} below {minimum}"
    assert stats.point_count == len(ids)
    assert stats.trained


async def test_ivf_pq_points_written_before_training_are_searchable_exactly(tmp_path):
    data = glove_subset()
    base = data.base[:3000]
    ids = [f"w{i}" for i in range(len(base))]
    index = types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=64, m=25, train_size=5000))
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1], index)))
        await upsert_in_batches(stub, ref(), ids, base)
        response = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:5]), k=1))
        assert [r.ids[0] for r in response.results] == ids[:5]
        assert all(r.strategy == types_pb2.EXACT for r in response.results)
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
        assert not stats.trained
        trained = await stub.Train(shard_pb2.TrainRequest(ref=ref()))
        assert trained.trained_on == len(base)
        response = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:5]), k=1))
        assert all(r.strategy == types_pb2.ANN for r in response.results)
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
        assert stats.trained and stats.point_count == len(base)
