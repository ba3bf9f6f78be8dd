"""Merging per-shard top-k lists into the global top-k.

Scores are comparable across shards because every shard of a collection uses the same metric and the
same score convention (higher is better). The merge is exact: the global top-k is always within the
union of per-shard top-k lists. Ties keep shard order, then in-shard order, so results are stable.
"""
from __future__ import annotations

from itertools import chain
from typing import Any, Sequence

import numpy as np


def merge_topk_batch(scores_per_shard: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best k entries per query across shards, for a whole batch in one array operation.

    Each input is (n_queries, width_s) with -inf where a shard had fewer results. Returns (shard index,
    position, score) arrays of shape (n_queries, min(k, total width)); entries with score -inf are padding
    (position -1).
    """
    widths = [s.shape[1] for s in scores_per_shard]
    scores = np.concatenate(scores_per_shard, axis=1)
    take = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    shard_of = np.repeat(np.arange(len(widths)), widths)
    starts = np.concatenate(([0], np.cumsum(widths)[:-1]))
    shards = shard_of[order]
    positions = order - starts[shards]
    best = np.take_along_axis(scores, order, axis=1)
    positions[~np.isfinite(best)] = -1
    return shards, positions, best


def merge_results_batch(results_per_shard: Sequence[Sequence[Any]], n_queries: int, k: int) -> tuple[list[list[str]], list[list[float]], np.ndarray, np.ndarray]:
    """The global top-k of a batch from each shard's per-query results (anything with `ids` and `scores`
    sequences, best first): (ids, scores) per query, and the (shard, position) arrays of merge_topk_batch.

    Each shard's scores and ids are read out of its results in one pass each (not an element at a time:
    indexing protobuf repeated fields per hit cost more than the whole merge), and the winners' ids are
    picked with one object-array take for the whole batch.
    """
    blocks, id_lists, row_starts, base = [], [], [], 0
    for results in results_per_shard:
        lengths = np.fromiter((len(r.scores) for r in results), dtype=np.int64, count=n_queries)
        total = int(lengths.sum())
        flat = np.fromiter(chain.from_iterable(r.scores for r in results), dtype=np.float32, count=total)
        width = max(int(lengths.max(initial=0)), 1)
        block = np.full((n_queries, width), -np.inf, dtype=np.float32)
        block[np.arange(width) < lengths[:, None]] = flat  # row-major, as the results are listed
        blocks.append(block)
        ids = list(chain.from_iterable(r.ids for r in results))
        if len(ids) != total:
            raise ValueError(f"a shard answered {len(ids)} ids for {total} scores")
        id_lists.append(ids)
        row_starts.append(base + np.concatenate(([0], np.cumsum(lengths)[:-1])))
        base += total
    shards, positions, best = merge_topk_batch(blocks, k)
    found = positions >= 0
    counts = found.sum(axis=1).tolist()  # padding sorts last, so each row's winners are a prefix
    starts = np.stack(row_starts)
    flat_index = np.where(found, starts[shards, np.arange(n_queries)[:, None]] + positions, 0)
    all_ids = np.empty(base, dtype=object)
    all_ids[:] = list(chain.from_iterable(id_lists))
    picked_ids = all_ids[flat_index] if base else np.empty(flat_index.shape, dtype=object)
    ids_out = [picked_ids[q, : counts[q]].tolist() for q in range(n_queries)]
    scores_out = [best[q, : counts[q]].tolist() for q in range(n_queries)]
    return ids_out, scores_out, shards, positions
