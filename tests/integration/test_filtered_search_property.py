"""Property: filtered search over a real HNSW partition agrees with a brute-force oracle for random filters."""
from __future__ import annotations

import functools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.filters import And, Contains, Eq, Exists, Filter, In, Not, Or, Range, matches
from quiver.specs import PartitionKey, PartitionSpec
from shard.indexes import QueryKnobs
from shard.partition_state import PartitionState, SearchPolicy
from tests.data_fixtures import glove_subset

N = 4000
K = 10
COLOURS = ("red", "green", "blue", "cyan")


def metadata_of(i: int) -> dict:
    md: dict = {"a": i % 10, "b": COLOURS[i % 4], "c": float((i * 37) % 101) / 10}
    if i % 3:
        md["tags"] = tuple(COLOURS[j] for j in range(4) if (i >> j) & 1)
    return md


@functools.cache
def partition() -> tuple[PartitionState, np.ndarray, list[dict]]:
    data = glove_subset()
    vectors = data.base[:N] / np.linalg.norm(data.base[:N], axis=1, keepdims=True)
    state = PartitionState(PartitionSpec(PartitionKey("p", 0, 1), 50, "cosine", "hnsw", {"ef_search": 200}))
    metadata = [metadata_of(i) for i in range(N)]
    state.upsert([str(i) for i in range(N)], vectors.astype(np.float32), metadata)
    return state, vectors, metadata


leaves = st.one_of(
    st.builds(Eq, st.just("a"), st.integers(0, 9)),
    st.builds(Eq, st.just("b"), st.sampled_from(COLOURS)),
    st.builds(In, st.just("a"), st.lists(st.integers(0, 12), min_size=1, max_size=4).map(tuple)),
    st.builds(Range, st.just("c"), gte=st.one_of(st.none(), st.floats(0, 10)), lt=st.floats(0, 11)),
    st.builds(Exists, st.just("tags")),
    st.builds(Contains, st.just("tags"), st.sampled_from(COLOURS)),
)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(And, st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(Or, st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(Not, inner),
    ),
    max_leaves=5,
)


def oracle(vectors: np.ndarray, metadata: list[dict], queries: np.ndarray, flt: Filter) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array([i for i, md in enumerate(metadata) if matches(flt, md)], dtype=np.int64)
    if len(rows) == 0:
        return rows, np.zeros((len(queries), 0), np.float32)
    scores = queries @ vectors[rows].T
    return rows, -np.sort(-scores, axis=1)[:, :K]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flt=filters, query_rows=st.lists(st.integers(0, N - 1), min_size=1, max_size=4, unique=True),
    force=st.sampled_from(["exact_filtered", "ann_filtered", "ann_post_filtered", ""]),
)
def test_filtered_search_returns_the_brute_force_filtered_topk(flt, query_rows, force):
    state, vectors, metadata = partition()
    queries = vectors[query_rows] + 0.05
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    matching, best = oracle(vectors, metadata, queries, flt)
    # Each filtered strategy forced in turn, and the cost model's own pick ("").
    policy = SearchPolicy(force_filtered=force)
    results = state.search(queries, K, flt, QueryKnobs(ef_search=200), False, policy)
    allowed = set(str(r) for r in matching.tolist())
    recalls = []
    for result, want in zip(results, best):
        assert len(result.ids) == min(K, len(matching))
        assert set(result.ids) <= allowed
        if len(matching) and force:
            # A query the ANN left short is completed exactly and says so.
            assert result.strategy in (force, "exact_filtered")
        if force == "exact_filtered" or result.strategy == "exact_filtered":
            np.testing.assert_allclose(result.scores, want, atol=1e-5)
        elif len(want):
            recalls.append(np.mean(result.scores >= want[-1] - 1e-6))
    if recalls:
        assert np.mean(recalls) >= 0.9
