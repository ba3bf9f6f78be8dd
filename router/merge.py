"""Merging per-shard top-k lists into the global top-k.

Scores are comparable across shards because every shard of a collection uses the same metric and the
same score convention (higher is better). The merge is exact: the global top-k is always within the
union of per-shard top-k lists. Ties keep shard order, then in-shard order, so results are stable.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def merge_topk_batch(scores_per_shard: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k entries per query across shards, for a whole batch in one array operation.

    Each input is (n_queries, width_s) with -inf where a shard had fewer results. Returns (shard index,
    position) arrays of shape (n_queries, min(k, total width)); entries with score -inf are padding
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
    positions[~np.isfinite(np.take_along_axis(scores, order, axis=1))] = -1
    return shards, positions
