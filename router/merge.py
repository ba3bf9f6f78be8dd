"""Merging per-shard top-k lists into the global top-k.

Scores are comparable across shards because every shard of a collection uses the same metric and the
same score convention (higher is better). The merge is exact: the global top-k is always within the
union of per-shard top-k lists. Ties keep shard order, then in-shard order, so results are stable.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def merge_topk(scores_per_shard: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (shard index, position within that shard) of the best k entries, best first."""
    sizes = [len(s) for s in scores_per_shard]
    total = sum(sizes)
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    scores = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores_per_shard])
    order = np.argsort(-scores, kind="stable")[:k]
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return shard_of[order], order - starts[shard_of[order]]
