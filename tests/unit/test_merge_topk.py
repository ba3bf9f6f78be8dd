"""merge_topk against sorting everything, for random per-shard lists."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from router.merge import merge_topk, merge_topk_batch

shard_lists = st.lists(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32), max_size=20).map(
        lambda xs: np.array(sorted(xs, reverse=True), dtype=np.float32)
    ),
    min_size=1,
    max_size=6,
)


@given(shard_lists, st.integers(min_value=1, max_value=40))
@settings(max_examples=300)
def test_merge_topk_equals_sorting_the_union(lists, k):
    shards, positions = merge_topk(lists, k)
    merged = [float(lists[s][p]) for s, p in zip(shards, positions)]
    union = sorted((float(x) for scores in lists for x in scores), reverse=True)
    assert merged == union[:k]
    assert len({(int(s), int(p)) for s, p in zip(shards, positions)}) == len(merged)


def test_merge_topk_of_empty_lists_is_empty():
    shards, positions = merge_topk([np.zeros(0), np.zeros(0)], 5)
    assert len(shards) == len(positions) == 0


@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=5), st.integers(1, 20), st.integers(0, 2**16))
@settings(max_examples=200)
def test_batch_merge_equals_per_query_merge(widths, k, seed):
    rng = np.random.default_rng(seed)
    n_queries = 3
    per_shard = []
    for width in widths:
        block = np.full((n_queries, max(width, 1)), -np.inf, dtype=np.float32)
        for q in range(n_queries):
            found = int(rng.integers(0, width + 1))
            block[q, :found] = np.sort(rng.standard_normal(found).astype(np.float32))[::-1]
        per_shard.append(block)
    shards, positions = merge_topk_batch(per_shard, k)
    for q in range(n_queries):
        lists = [block[q][np.isfinite(block[q])] for block in per_shard]
        want_s, want_p = merge_topk(lists, k)
        got = [(s, p) for s, p in zip(shards[q].tolist(), positions[q].tolist()) if p >= 0]
        assert got == list(zip(want_s.tolist(), want_p.tolist()))
