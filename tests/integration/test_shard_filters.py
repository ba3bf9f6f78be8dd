"""Filtered search over gRPC on real vectors: exact filtered top-k from brute force, at four selectivities,
with the strategy the cost model picks (each reported in the response with its estimate and match count)
and with each strategy forced."""
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


# (filter, selectivity, forced strategy or "" for the cost model's pick, the strategy expected). On 20k
# points at ef 128 the model post-filters a 50% filter (k' = 50 costs less than scoring 10k points, or the
# callback search visiting ~2x the nodes) and scores 5% and below exactly (1,000 points cost ~40 us).
CASES = [
    (Eq("half", True), 0.5, "", "ann_post_filtered"),
    (Eq("bucket20", 0), 0.05, "", "exact_filtered"),
    (Eq("rare", "yes"), 0.005, "", "exact_filtered"),
    (Eq("tiny", "yes"), 0.0005, "", "exact_filtered"),
    (Eq("half", True), 0.5, "ann_filtered", "ann_filtered"),
    (Eq("bucket20", 0), 0.05, "ann_filtered", "ann_filtered"),
    (Eq("bucket20", 0), 0.05, "ann_post_filtered", "ann_post_filtered"),
]
CASE_IDS = ["50%", "5%", "0.5%", "0.05%", "50%-callback", "5%-callback", "5%-post_filtered"]
STRATEGY = {
    "ann_filtered": types_pb2.ANN_FILTERED, "exact_filtered": types_pb2.EXACT_FILTERED, "ann_post_filtered": types_pb2.ANN_POST_FILTERED,
}


@pytest.fixture(scope="module")
def loaded():
    data = glove_subset()
    return data, selectivity_metadata(len(data.base))


@pytest.mark.parametrize(("flt", "selectivity", "force", "strategy"), CASES, ids=CASE_IDS)
async def test_filtered_search_matches_brute_force_filtered_topk(tmp_path, loaded, flt, selectivity, force, strategy):
    data, metadata = loaded
    k = 10
    ids = [f"w{i}" for i in range(len(data.base))]
    index = types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=16, ef_construction=200, ef_search=128))
    queries = data.queries[:100]
    expected = brute_force_filtered(data.base, metadata, queries, flt, k)
    async with running_shard(tmp_path, search=SearchPolicy(force_filtered=force)) as (_, stub):
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
        assert result.filter_matches == matching and result.estimated_cost_us > 0
        got = [int(i[1:]) for i in result.ids]
        assert all(matches(flt, metadata[r]) for r in got)
        hits += len(set(got) & set(want))
    recall = hits / sum(len(w) for w in expected)
    if strategy == "exact_filtered":
        assert recall == 1.0
    else:
        assert recall >= 0.95, f"filtered ANN recall {recall:.3f} at selectivity {selectivity}"
