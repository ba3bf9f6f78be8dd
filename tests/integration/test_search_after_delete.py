"""Deleted points never come back, on any search path, while their labels stay free.

After a delete the point's label is freed but not reused until the next upsert: the index still holds
its vector (hnswlib only marks it deleted, the flat arena only clears a bit) and the label's slot in
every bitmap still exists. Each search path must leave it out on its own: the ANN path through the
index's deletion marks, every exact path (flat / untrained IVF, force_exact, selective filters, the
completion of short ANN results) through the partition's `live` bitmap, and a Not filter, which would
otherwise match the deleted point's now empty metadata, through `live` as well.

The oracle is brute force over the points still live. Queries sit on deleted points' vectors, so a path
that forgot a delete would rank that point first.
"""
from __future__ import annotations

import numpy as np
import pytest

from quiver.filters import Eq, Filter, In, Not, matches
from quiver.specs import PartitionKey, PartitionSpec
from quiver.v1 import shard_pb2, types_pb2
from quiver.wire.filters import filter_to_proto, metadata_to_proto
from shard.indexes import QueryKnobs
from shard.partition_state import PartitionState, SearchPolicy
from tests.shard_harness import packed, ref, running_shard, spec, upsert_in_batches

DIM = 32
N = 3000
K = 10
# The cost model picks (a 1% filter is scored exactly); the others force one filtered strategy on HNSW
# (an IVF-PQ index has no cost model: exact only for a filter of <= 2% of its points).
SMALL_IS_EXACT = SearchPolicy(exact_filter_fraction=0.02, exact_filter_min_points=0)
NEVER_EXACT = SearchPolicy(force_filtered="ann_filtered", exact_filter_fraction=0.0, exact_filter_min_points=0)
POST_FILTERED = SearchPolicy(force_filtered="ann_post_filtered")


def dataset(n: int = N, seed: int = 3) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = [{"g": i % 100, "half": i % 2} for i in range(n)]
    return [f"p{i}" for i in range(n)], vectors, metadata


def deleted_rows(n: int = N) -> list[int]:
    """A third of the points, spread over every `g` and `half` value."""
    return [i for i in range(n) if i % 3 == 0]


def queries_on(vectors: np.ndarray, rows: list[int]) -> np.ndarray:
    """Queries right next to the given (deleted) points, so each would be its query's top hit."""
    rng = np.random.default_rng(11)
    near = vectors[rows] + 0.01 * rng.standard_normal((len(rows), DIM)).astype(np.float32)
    return (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, metadata: list[dict], live: set[int], queries: np.ndarray, flt: Filter | None, k: int):
    """(matching live rows, top-k scores per query) over the live points only."""
    rows = np.array(sorted(r for r in live if flt is None or matches(flt, metadata[r])), dtype=np.int64)
    scores = queries @ vectors[rows].T
    return rows, -np.sort(-scores, axis=1)[:, :k]


def check_against_brute_force(results, ids, vectors, metadata, live, queries, flt, k, *, exact: bool) -> None:
    rows, best = brute_force(vectors, metadata, live, queries, flt, k)
    allowed = {ids[r] for r in rows.tolist()}
    deleted = set(ids) - {ids[r] for r in live}
    recalls = []
    for result, want in zip(results, best):
        assert not set(result.ids) & deleted, f"{result.strategy} returned deleted points"
        assert set(result.ids) <= allowed, f"{result.strategy} returned points outside the live matching set"
        assert len(result.ids) == min(k, len(rows)), f"{result.strategy} must return min(k, live matching) results"
        if exact:
            np.testing.assert_allclose(result.scores, want, atol=1e-5)
        else:
            recalls.append(np.mean(result.scores >= want[-1] - 1e-5))
    if recalls:
        assert np.mean(recalls) >= 0.95


def loaded_partition(kind: str, params: dict | None = None, n: int = N, delete=deleted_rows):
    ids, vectors, metadata = dataset(n)
    state = PartitionState(PartitionSpec(PartitionKey("docs", 0, 1), DIM, "cosine", kind, params or {}))
    state.upsert(ids, vectors, metadata)
    gone = delete(n)
    assert state.delete([ids[r] for r in gone]) == len(gone)
    return state, ids, vectors, metadata, set(range(n)) - set(gone), gone


# (index kind, params, filter, force_exact, policy, expected strategy). Filters: Eq("g", 7) holds 30 of
# 3000 points (1%), Eq("half", 0) 50%; Not(In("g", 0..98)) 1% and Not(Eq("half", 0)) 50%.
SELECTIVE = Eq("g", 7)
BROAD = Eq("half", 0)
SELECTIVE_NOT = Not(In("g", tuple(range(99))))
BROAD_NOT = Not(Eq("half", 0))
HNSW = {"ef_search": 256}
IVF_UNTRAINED = {"nlist": 16, "m": 8, "train_size": 100_000}
PATHS = [
    ("hnsw", HNSW, None, False, SMALL_IS_EXACT, "ann"),
    ("hnsw", HNSW, None, True, SMALL_IS_EXACT, "exact"),
    ("flat", {}, None, False, SMALL_IS_EXACT, "exact"),
    ("flat", {}, None, True, SMALL_IS_EXACT, "exact"),
    ("ivf_pq", IVF_UNTRAINED, None, False, SMALL_IS_EXACT, "exact"),
    ("hnsw", HNSW, SELECTIVE, False, SMALL_IS_EXACT, "exact_filtered"),
    ("hnsw", HNSW, BROAD, True, SMALL_IS_EXACT, "exact_filtered"),
    ("hnsw", HNSW, BROAD, False, NEVER_EXACT, "ann_filtered"),
    ("flat", {}, BROAD, False, NEVER_EXACT, "exact_filtered"),
    ("hnsw", HNSW, SELECTIVE_NOT, False, SMALL_IS_EXACT, "exact_filtered"),
    ("hnsw", HNSW, BROAD_NOT, True, SMALL_IS_EXACT, "exact_filtered"),
    ("hnsw", HNSW, BROAD_NOT, False, NEVER_EXACT, "ann_filtered"),
    ("hnsw", HNSW, BROAD, False, POST_FILTERED, "ann_post_filtered"),
    ("hnsw", HNSW, SELECTIVE_NOT, False, POST_FILTERED, "ann_post_filtered"),
    ("flat", {}, BROAD_NOT, False, NEVER_EXACT, "exact_filtered"),
    ("ivf_pq", IVF_UNTRAINED, SELECTIVE_NOT, False, SMALL_IS_EXACT, "exact_filtered"),
]
PATH_IDS = [
    "hnsw-ann",
    "hnsw-force_exact",
    "flat",
    "flat-force_exact",
    "ivf_untrained",
    "hnsw-selective_filter",
    "hnsw-broad_filter-force_exact",
    "hnsw-broad_filter-ann",
    "flat-broad_filter",
    "hnsw-selective_not",
    "hnsw-broad_not-force_exact",
    "hnsw-broad_not-ann",
    "hnsw-broad_filter-post_filtered",
    "hnsw-selective_not-post_filtered",
    "flat-broad_not",
    "ivf_untrained-selective_not",
]


@pytest.mark.parametrize(("kind", "params", "flt", "force_exact", "policy", "strategy"), PATHS, ids=PATH_IDS)
def test_no_search_path_returns_a_deleted_point_and_each_returns_the_live_topk(kind, params, flt, force_exact, policy, strategy):
    state, ids, vectors, metadata, live, gone = loaded_partition(kind, params)
    queries = queries_on(vectors, gone[:40])
    results = state.search(queries, K, flt, QueryKnobs(), force_exact, policy)
    assert {r.strategy for r in results} == {strategy}
    check_against_brute_force(results, ids, vectors, metadata, live, queries, flt, K, exact=strategy.startswith("exact"))


@pytest.mark.parametrize("flt", [None, BROAD_NOT], ids=["unfiltered", "not_filter"])
def test_short_ann_results_are_completed_from_live_points_only(flt):
    # A sparse graph (m=2) leaves some points unreachable, so asking for every live (matching) point
    # makes hnswlib come back short; the partition then completes those queries exactly.
    state, ids, vectors, metadata, live, gone = loaded_partition("hnsw", {"m": 2, "ef_construction": 10, "ef_search": 10}, n=2000)
    rows, _ = brute_force(vectors, metadata, live, vectors[:1], flt, len(live))
    k = len(rows) + 5
    queries = queries_on(vectors, gone[:20])
    results = state.search(queries, k, flt, QueryKnobs(), False, NEVER_EXACT)
    completed = "exact" if flt is None else "exact_filtered"
    assert any(r.strategy == completed for r in results), "precondition: hnswlib came back short for some query"
    check_against_brute_force(
        [r for r in results if r.strategy == completed],
        ids,
        vectors,
        metadata,
        live,
        queries[[r.strategy == completed for r in results]],
        flt,
        k,
        exact=True,
    )


def test_ids_matching_a_not_filter_are_only_live_points():
    state, ids, _, metadata, live, _ = loaded_partition("flat")
    assert sorted(state.ids_matching(BROAD_NOT)) == sorted(ids[r] for r in live if matches(BROAD_NOT, metadata[r]))


INDEXES = {
    "hnsw": types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef_search=256)),
    "flat": types_pb2.IndexSpec(flat=types_pb2.FlatParams()),
}
STRATEGY = {
    types_pb2.ANN: "ann",
    types_pb2.ANN_FILTERED: "ann_filtered",
    types_pb2.EXACT: "exact",
    types_pb2.EXACT_FILTERED: "exact_filtered",
}


@pytest.mark.parametrize("kind", list(INDEXES))
async def test_over_grpc_deleted_points_stay_out_of_exact_filtered_and_not_searches_and_filter_deletes(tmp_path, kind):
    ids, vectors, metadata = dataset()
    gone = deleted_rows()
    live = set(range(N)) - set(gone)
    queries = queries_on(vectors, gone[:20])
    async with running_shard(tmp_path, search=SMALL_IS_EXACT) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM, INDEXES[kind])))
        await upsert_in_batches(stub, ref(), ids, vectors, [metadata_to_proto(m) for m in metadata], batch=1000)
        deleted = await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=[ids[r] for r in gone]))
        assert deleted.deleted == len(gone)

        for flt, exact in [(None, True), (SELECTIVE, False), (SELECTIVE_NOT, False), (BROAD_NOT, True)]:
            response = await stub.Search(
                shard_pb2.SearchRequest(
                    ref=ref(),
                    queries=packed(queries),
                    k=K,
                    filter=filter_to_proto(flt) if flt is not None else None,
                    params=types_pb2.SearchParams(exact=exact),
                )
            )
            results = response.results
            assert {STRATEGY[r.strategy] for r in results} == {"exact" if flt is None else "exact_filtered"}
            scored = [_Hits(list(r.ids), np.asarray(r.scores), STRATEGY[r.strategy]) for r in results]
            check_against_brute_force(scored, ids, vectors, metadata, live, queries, flt, K, exact=True)

        # Deleting by a Not filter deletes exactly the live points it matches, none of the gone ones again.
        by_filter = await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), filter=filter_to_proto(SELECTIVE_NOT)))
        assert by_filter.deleted == sum(matches(SELECTIVE_NOT, metadata[r]) for r in live)
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
        assert stats.point_count == len(live) - by_filter.deleted


class _Hits:
    def __init__(self, ids: list[str], scores: np.ndarray, strategy: str) -> None:
        self.ids, self.scores, self.strategy = ids, scores, strategy
