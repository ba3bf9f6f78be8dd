"""Exact scoring in chunks: the same top-k as one brute-force pass over everything, for any chunking, any
mask and any holes; extra memory per search bounded by a fixed chunk whatever the partition's size; and an
hnswlib batch that fails for one query falls back for that query alone.

Vectors here are synthetic (random normal): the properties need odd shapes, holes and sizes, not meaning.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shard.indexes.exact as exact
from quiver.specs import PartitionKey, PartitionSpec
from shard.indexes import QueryKnobs
from shard.indexes.arena import VectorArena
from shard.partition_state import PartitionState, SearchPolicy

# A chunk of exactly 5 rows and a score block of 3 queries x 5 candidates: every search here crosses many.
TINY = {"CHUNK_BYTES": 5 * 4 * 4, "_MAX_SCORES": 15}


def brute_force_scores(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int, space: str) -> np.ndarray:
    """The true top-k scores per query (best first, -inf padded): what any correct search must report."""
    out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if len(labels):
        scores = exact.score_matrix(queries, vectors[labels], space)
        best = -np.sort(-scores, axis=1)[:, :k]
        out[:, : best.shape[1]] = best
    return out


def assert_exact(hits, queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int, space: str) -> None:  # type: ignore[no-untyped-def]
    expected = brute_force_scores(queries, vectors, labels, k, space)
    np.testing.assert_allclose(hits.scores, expected, rtol=1e-4, atol=1e-4)
    for row in range(len(queries)):
        found = hits.labels[row][hits.labels[row] >= 0]
        assert len(found) == len(set(found.tolist())) == min(k, len(labels))  # no label twice, none missing
        assert set(found.tolist()) <= set(labels.tolist())
        # Each reported label's score is its own true score (so ties may pick either, never a wrong one).
        true = exact.score_matrix(queries[row : row + 1], vectors[found], space)[0]
        np.testing.assert_allclose(hits.scores[row, : len(found)], true, rtol=1e-4, atol=1e-4)


shapes = st.tuples(st.integers(0, 60), st.integers(1, 4), st.integers(1, 7), st.integers(1, 20), st.sampled_from(["l2", "ip"]), st.integers(0, 2**16))


@given(shapes)
@settings(max_examples=150, deadline=None)
def test_masked_chunked_top_k_equals_one_brute_force_pass(shape) -> None:  # type: ignore[no-untyped-def]
    n, dim, n_queries, k, space, seed = shape
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    mask = rng.random(n) < rng.random()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exact, "CHUNK_BYTES", TINY["CHUNK_BYTES"] * dim // 4)
        patch.setattr(exact, "_MAX_SCORES", TINY["_MAX_SCORES"])
        patch.setattr(exact, "MIN_CHUNK_ROWS", 1)
        labels = np.flatnonzero(mask)
        assert_exact(exact.exact_topk_masked(queries, mask, lambda ls: vectors[ls], k, space), queries, vectors, labels, k, space)
        assert_exact(exact.exact_topk_of(queries, labels, lambda ls: vectors[ls], k, space), queries, vectors, labels, k, space)
        assert_exact(exact.exact_topk(queries, vectors[labels], labels, k, space), queries, vectors, labels, k, space)


@given(shapes, st.integers(0, 80))
@settings(max_examples=100, deadline=None)
def test_arena_search_over_holes_and_an_allowed_mask_equals_brute_force(shape, mask_length) -> None:  # type: ignore[no-untyped-def]
    n, dim, n_queries, k, space, seed = shape
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    arena = VectorArena(dim, capacity=4)
    arena.put(np.arange(n), vectors)
    removed = np.flatnonzero(rng.random(n) < 0.3)
    arena.remove(removed)
    live = np.ones(n, dtype=bool)
    live[removed] = False
    allowed = rng.random(mask_length) < 0.7  # shorter or longer than the arena, as the partition's bitmap can be
    allowed_padded = np.zeros(max(n, mask_length), dtype=bool)
    allowed_padded[:mask_length] = allowed
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exact, "CHUNK_BYTES", TINY["CHUNK_BYTES"] * dim // 4)
        patch.setattr(exact, "MIN_CHUNK_ROWS", 1)
        assert_exact(arena.search_exact(queries, k, None, space), queries, vectors, np.flatnonzero(live), k, space)
        wanted = np.flatnonzero(live & allowed_padded[:n])
        assert_exact(arena.search_exact(queries, k, allowed, space), queries, vectors, wanted, k, space)


def extra_bytes_of_one_exact_search(kind: str, n: int, dim: int = 32) -> int:
    spec = PartitionSpec(PartitionKey("docs", 0, 1), dim, "l2", kind, {"m": 8, "ef_construction": 16} if kind == "hnsw" else {})
    state = PartitionState(spec)
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    for start in range(0, n, 50_000):
        state.upsert([f"p{i}" for i in range(start, min(n, start + 50_000))], vectors[start : start + 50_000], None)
    state.delete([f"p{i}" for i in range(0, n, 7)])  # holes, so chunks are gathered, not only viewed
    tracemalloc.start()
    try:
        hits = state.search(vectors[1:2], 10, None, QueryKnobs(), True, SearchPolicy())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert hits[0].ids[0] == "p1" and hits[0].strategy == "exact"
    return peak


@pytest.mark.parametrize("kind, dim, sizes", [("flat", 32, (60_000, 360_000)), ("hnsw", 128, (8_000, 40_000))])
def test_an_exact_search_needs_a_fixed_chunk_of_memory_whatever_the_partitions_size(kind, dim, sizes) -> None:
    bound = 4 * exact.CHUNK_BYTES  # the chunk, its gather, the hnswlib transient and small change
    for n in sizes:
        partition_bytes = n * dim * 4
        peak = extra_bytes_of_one_exact_search(kind, n, dim)
        assert peak < bound, f"{kind} with {n} points ({partition_bytes >> 20} MiB): {peak >> 20} MiB extra"
    assert sizes[-1] * dim * 4 > bound  # the larger partition is well past the bound: a copy would not fit


def test_an_hnswlib_batch_failing_for_one_query_falls_back_for_that_query_alone() -> None:
    spec = PartitionSpec(PartitionKey("docs", 0, 1), 8, "l2", "hnsw", {"m": 8, "ef_construction": 32})
    state = PartitionState(spec)
    vectors = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32)
    state.upsert([f"p{i}" for i in range(500)], vectors, None)
    index = state.index._index
    poisoned = vectors[7]

    class FailsForOneQuery:
        """hnswlib's refusal ("cannot return the results in a contiguous 2D array") for any batch holding
        one particular query, as it happens when that query alone cannot fill k; the real index otherwise."""

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(index, name)

        def knn_query(self, queries, **kwargs):  # type: ignore[no-untyped-def]
            if any(np.array_equal(q, poisoned) for q in queries):
                raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")
            return index.knn_query(queries, **kwargs)

    state.index._index = FailsForOneQuery()  # type: ignore[assignment]
    hits = state.search(vectors[[3, 7, 11]], 5, None, QueryKnobs(), False, SearchPolicy())
    assert [h.strategy for h in hits] == ["ann", "exact", "ann"]
    assert [h.ids[0] for h in hits] == ["p3", "p7", "p11"]
    assert all(len(h.ids) == 5 for h in hits)


def test_labels_at_or_past_the_arenas_capacity_are_not_live() -> None:
    arena = VectorArena(2, capacity=4)
    arena.put(np.array([0, 3]), np.ones((2, 2), dtype=np.float32))
    assert arena.is_live(np.array([0, 1, 3, 4, 5, 10**6])).tolist() == [True, False, True, False, False, False]


@given(shapes)
@settings(max_examples=150, deadline=None)
def test_scoring_labels_in_place_or_gathered_equals_brute_force(shape) -> None:  # type: ignore[no-untyped-def]
    """A few queries are scored row by row in place (faiss), more are gathered and scored by BLAS: both give
    the true top-k of exactly the labels asked for, in either space, padded when fewer than k are asked."""
    n, dim, n_queries, k, space, seed = shape
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    arena = VectorArena(dim, capacity=4)
    arena.put(np.arange(n), vectors)
    labels = rng.permutation(np.flatnonzero(rng.random(n) < rng.random()))  # in no particular order
    for batch in (1, 4, n_queries + 4):
        queries = rng.standard_normal((batch, dim)).astype(np.float32)
        assert_exact(arena.search_labels(queries, k, labels, space), queries, vectors, labels, k, space)


def test_scoring_a_label_past_the_arenas_rows_fails_as_a_read_of_it_does() -> None:
    arena = VectorArena(2, capacity=4)
    arena.put(np.array([0, 1]), np.ones((2, 2), dtype=np.float32))
    for n_queries in (1, 5):  # in place and gathered alike
        with pytest.raises(IndexError):
            arena.search_labels(np.ones((n_queries, 2), dtype=np.float32), 1, np.array([0, 4]), "ip")
