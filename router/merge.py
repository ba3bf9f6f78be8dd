"""Merging per-shard top-k lists into the global top-k.

Scores are comparable across shards because every shard of a collection uses the same metric and the
same score convention (higher is better). The merge is exact: the global top-k is always within the
union of per-shard top-k lists. Ties keep shard order, then in-shard order, so results are stable.
"""
from __future__ import annotations

from itertools import chain
from typing import Any, Sequence

import numpy as np

from quiver.wire.packed_hits import HitBatch, gather_bytes


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
    positions[np.isneginf(best)] = -1  # padding; a score of +inf (an inner product that overflowed) is a hit
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


def merge_hit_batches(batches: Sequence[HitBatch], k: int) -> HitBatch:
    """The global top-k of a batch from each shard's packed hits, in array operations only: no string is
    decoded, the winners' id bytes are gathered in one take. Ties keep shard order, then in-shard order.
    Each query's strategy is the first shard's; its estimated cost and filter matches are summed over the
    shards (as merge_results_batch's callers do)."""
    if len(batches) == 1:
        return batches[0]
    n_queries = batches[0].n_queries
    if any(b.n_queries != n_queries for b in batches):
        raise ValueError(f"shards answered for {[b.n_queries for b in batches]} queries; the batch has {n_queries}")
    blocks, hit_bases, row_starts, hit_base = [], [], [], 0
    for batch in batches:
        width = max(int(batch.counts.max(initial=0)), 1)
        if len(batch.scores) == n_queries * width:  # every query has as many hits (the usual case): no padding
            block = batch.scores.reshape(n_queries, width)
        else:
            block = np.full((n_queries, width), -np.inf, dtype=np.float32)
            block[np.arange(width) < batch.counts[:, None]] = batch.scores  # row-major, as the hits are listed
        blocks.append(block)
        row_starts.append(batch.row_starts())
        hit_bases.append(hit_base)
        hit_base += len(batch.scores)
    shards, positions, best = merge_topk_batch(blocks, k)
    found = positions >= 0  # padding sorts last, so each row's winners are a prefix
    # Every shard's hits numbered in one sequence (shard after shard), and where each one's id begins in
    # the shards' id bytes laid end to end.
    starts_of_rows = np.stack(row_starts) + np.asarray(hit_bases, dtype=np.int64)[:, None]
    hit = starts_of_rows[shards, np.arange(n_queries)[:, None]] + positions
    winners = hit[found]
    lengths = np.concatenate([b.id_lengths for b in batches])  # in that sequence, as the ids laid end to end
    id_starts = np.cumsum(lengths) - lengths
    blob = np.frombuffer(b"".join(b.ids for b in batches), dtype=np.uint8)
    winner_lengths = lengths[winners]
    return HitBatch(
        counts=found.sum(axis=1).astype(np.int64),
        scores=best[found],
        id_lengths=winner_lengths,
        ids=gather_bytes(blob, id_starts[winners], winner_lengths),
        strategies=batches[0].strategies,
        # Summed in float64 and rounded once, as the message merge's Python sum of the shards' floats is.
        estimated_cost_us=np.sum([b.estimated_cost_us for b in batches], axis=0, dtype=np.float64).astype(np.float32),
        filter_matches=np.sum([b.filter_matches for b in batches], axis=0, dtype=np.uint64),
    )
