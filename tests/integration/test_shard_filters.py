"""Filtered search over gRPC on real vectors: exact filtered top-k from brute force, at four selectivities."""
from __future__ import annotations

import numpy as np
import pytest

from quiver.filters import Eq, Filter, matches
from quiver.v1 import shard_pb2, types_pb2
from quiver.wire.filters import filter_to_proto, metadata_to_proto
from tests.data_fixtures import glove_subset, selectivity_metadata
from shard.partition_state import SearchPolicy
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches


def brute_force_filtered(base: np.ndarray, metadata: list[dict], queries: np.ndarray, flt: Filter, k: int) -> list[list[int]]:
    rows = np.array([r for r, md in enumerate(metadata) if matches(flt, md)], dtype=np.int64)
    normed = base[rows] / np.linalg.norm(base[rows], axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = q @ normed.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [rows[o].tolist() for o in order]


CASES = [
    (Eq("half", True), 0.5, "ann_filtered"),
    (Eq("bucket20", 0), 0.05, "ann_filtered"),
    (Eq("rare", "yes"), 0.005, "exact_filtered"),
    (Eq("tiny", "yes"), 0.0005, "exact_filtered"),
]
STRATEGY = {"ann_filtered": types_pb2.ANN_FILTERED, "exact_filtered": types_pb2.EXACT_FILTERED}


@pytest.fixture(scope="module")
def loaded():
    data = glove_subset()
    return data, selectivity_metadata(len(data.base))


@pytest.mark.parametrize(("flt", "selectivity", "strategy"), CASES, ids=["50%", "5%", "0.5%", "0.05%"])
async def test_filtered_search_matches_brute_force_filtered_topk(tmp_path, loaded, flt, selectivity, strategy):
    data, metadata = loaded
    k = 10
    ids = [f"w{i}" for i in range(len(data.base))]
    index = types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=16, ef_construction=200, ef_search=128))
    queries = data.queries[:100]
    expected = brute_force_filtered(data.base, metadata, queries, flt, k)
    # Exact below 2% selectivity (the default), with no absolute floor, so 5% of 20k takes the ANN path.
    async with running_shard(tmp_path, search=SearchPolicy(exact_filter_fraction=0.02, exact_filter_min_points=0)) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(data.base.shape[1], index)))
        await upsert_in_batches(stub, ref(), ids, data.base, [metadata_to_proto(m) for m in metadata])
        response = await stub.Search(
            shard_pb2.SearchRequest(ref=ref(), queries=packed(queries), k=k, filter=filter_to_proto(flt), include_metadata=True)
        )
    matching = sum(matches(flt, m) for m in metadata)
    hits = 0
    for result, want in zip(response.results, expected):
        assert len(result.ids) == min(k, matching), "a filtered search must return min(k, matching) results"
        assert result.strategy == STRATEGY[strategy]
        got = [int(i[1:]) for i in result.ids]
        assert all(matches(flt, metadata[r]) for r in got)
        hits += len(set(got) & set(want))
    recall = hits / sum(len(w) for w in expected)
    if strategy == "exact_filtered":
        assert recall == 1.0
    else:
        assert recall >= 0.95, f"filtered ANN recall {recall:.3f} at selectivity {selectivity}"
