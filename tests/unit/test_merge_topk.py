"""merge_topk_batch against sorting everything, for random per-shard lists."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from router.merge import merge_topk_batch

N_QUERIES = 3


@st.composite
def shard_blocks(draw):  # type: ignore[no-untyped-def]
    """Per shard an (N_QUERIES, width) block of descending scores padded with -inf, as shards answer."""
    blocks = []
    for width in draw(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6)):
        block = np.full((N_QUERIES, max(width, 1)), -np.inf, dtype=np.float32)
        for q in range(N_QUERIES):
            found = draw(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32), max_size=width))
            block[q, : len(found)] = sorted(found, reverse=True)
        blocks.append(block)
    return blocks


@given(shard_blocks(), st.integers(min_value=1, max_value=40))
@settings(max_examples=300)
def test_batch_merge_equals_sorting_the_union_per_query(blocks, k):
    shards, positions, _ = merge_topk_batch(blocks, k)
    for q in range(N_QUERIES):
        pairs = [(s, p) for s, p in zip(shards[q].tolist(), positions[q].tolist()) if p >= 0]
        merged = [float(blocks[s][q, p]) for s, p in pairs]
        union = sorted((float(x) for block in blocks for x in block[q] if np.isfinite(x)), reverse=True)
        assert merged == union[:k]
        assert len(set(pairs)) == len(pairs)


def test_merge_of_shards_that_found_nothing_is_empty():
    empty = np.full((2, 1), -np.inf, dtype=np.float32)
    shards, positions, _ = merge_topk_batch([empty, empty], 5)
    assert (positions == -1).all()


def test_many_tied_scores_come_out_in_shard_then_position_order():
    # Over 16 entries a row, numpy's default sort is no longer stable: the merge must ask for a stable one.
    scores = [np.random.default_rng(s).choice(np.array([1.0, 2.0, 3.0], dtype=np.float32), size=(4, 50)) for s in range(3)]
    for block in scores:
        block[:] = -np.sort(-block, axis=1)  # each shard's list is in descending order, as shards answer
    shards, positions, _ = merge_topk_batch(scores, 150)
    for row in range(4):
        merged = [(float(-scores[s][row, p]), s, p) for s, p in zip(shards[row].tolist(), positions[row].tolist())]
        assert merged == sorted(merged)


@given(shard_blocks(), st.integers(min_value=1, max_value=40))
@settings(max_examples=200)
def test_a_single_query_merges_to_the_same_ids_scores_and_order_as_in_a_batch(blocks, k):
    # The router merges a lone query by sorting in Python and a batch in numpy: both must give the same
    # answer, ties included (shard order, then position). Ids name (shard, position) so ties are visible.
    from quiver.v1 import shard_pb2, types_pb2
    from router.servicer import _merge_batch

    def answer(s: int, rows: range) -> shard_pb2.SearchResponse:
        results = []
        for q in rows:
            scores = [float(x) for x in blocks[s][q] if np.isfinite(x)]
            results.append(types_pb2.QueryResult(ids=[f"{s}:{p}" for p in range(len(scores))], scores=scores))
        return shard_pb2.SearchResponse(results=results)

    batched = _merge_batch([answer(s, range(N_QUERIES)) for s in range(len(blocks))], N_QUERIES, k, 2, with_metadata=False, with_vectors=False)
    for q in range(N_QUERIES):
        alone = _merge_batch([answer(s, range(q, q + 1)) for s in range(len(blocks))], 1, k, 2, with_metadata=False, with_vectors=False)[0]
        assert list(alone.ids) == list(batched[q].ids)
        assert list(alone.scores) == list(batched[q].scores)


@given(shard_blocks(), st.integers(min_value=1, max_value=40))
@settings(max_examples=200)
def test_a_batch_merged_from_shard_results_keeps_the_best_k_with_their_own_ids(blocks, k):
    # Shards answer rows of different lengths; each winner must come back with the id its shard gave it.
    from quiver.v1 import types_pb2
    from router.merge import merge_results_batch

    results = []
    for s, block in enumerate(blocks):
        rows = []
        for q in range(N_QUERIES):
            scores = [float(x) for x in block[q] if np.isfinite(x)]
            rows.append(types_pb2.QueryResult(ids=[f"{s}:{q}:{p}" for p in range(len(scores))], scores=scores))
        results.append(rows)
    ids, scores, _, _ = merge_results_batch(results, N_QUERIES, k)
    for q in range(N_QUERIES):
        union = sorted(((float(x), f"{s}:{q}:{p}") for s, block in enumerate(blocks) for p, x in enumerate(block[q]) if np.isfinite(x)), key=lambda c: -c[0])
        assert scores[q] == [c[0] for c in union[:k]]
        by_id = dict((i, sc) for sc, i in union)
        assert [by_id[i] for i in ids[q]] == scores[q] and len(set(ids[q])) == len(ids[q])
