"""A batch's search hits in flat arrays (types_pb2.PackedHits): built by shards, merged by routers, read by
clients, with no protobuf message per query and no string object per hit on the way.

One QueryResult per query costs a message, a repeated string field and a repeated float field each: for a
batch of 64 queries at k=10 from 3 shards, building and reading those messages was most of a router's merge
(about 1 ms of its ~1.3 ms a batch on this machine). Packed, a shard's answer is seven byte strings and the
merge is array operations over them (router/merge.py `merge_hit_batches`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

from quiver.v1 import types_pb2


def _bounds(lengths: np.ndarray) -> np.ndarray:
    """0, then the running total: item i of consecutive runs of these lengths spans [bounds[i], bounds[i + 1])."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every position of the ranges [starts[i], starts[i] + lengths[i]), back to back: one fancy index
    takes them all out of a byte array."""
    total = int(lengths.sum())
    return np.repeat(starts - _bounds(lengths)[:-1], lengths) + np.arange(total, dtype=np.int64)


def gather_bytes(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """The byte ranges [starts[i], starts[i] + lengths[i]) of `blob` (uint8), back to back, in one gather."""
    return blob[gather_index(starts, lengths)].tobytes()


@dataclass(frozen=True)
class HitBatch:
    counts: np.ndarray             # int64 (n_queries,): hits per query
    scores: np.ndarray             # float32 (total,): query after query, best first
    id_lengths: np.ndarray         # int64 (total,): bytes of each hit's id
    ids: bytes                     # the ids, UTF-8, back to back
    strategies: np.ndarray         # uint8 (n_queries,): SearchStrategy values
    estimated_cost_us: np.ndarray  # float32 (n_queries,)
    filter_matches: np.ndarray     # uint64 (n_queries,)

    @property
    def n_queries(self) -> int:
        return len(self.counts)

    def row_starts(self) -> np.ndarray:
        """Where each query's hits begin in `scores` / `id_lengths`."""
        return _bounds(self.counts)[:-1]

    # -- building -----------------------------------------------------------------------------------

    @staticmethod
    def build(
        ids: Sequence[Sequence[str]], scores: Sequence[np.ndarray], strategies: Sequence[int],
        estimated_cost_us: Sequence[float], filter_matches: Sequence[int],
    ) -> "HitBatch":
        """From per-query id lists and score arrays (each query's best first, as long as its ids)."""
        n = len(ids)
        counts = np.fromiter((len(i) for i in ids), dtype=np.int64, count=n)
        encoded = [i.encode("utf-8") for i in chain.from_iterable(ids)]
        flat_scores = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores]) if n else np.zeros(0, np.float32)
        if len(flat_scores) != len(encoded):
            raise ValueError(f"{len(encoded)} ids for {len(flat_scores)} scores")
        return HitBatch(
            counts=counts,
            scores=flat_scores,
            id_lengths=np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)),
            ids=b"".join(encoded),
            strategies=np.asarray(strategies, dtype=np.uint8),
            estimated_cost_us=np.asarray(estimated_cost_us, dtype=np.float32),
            filter_matches=np.asarray(filter_matches, dtype=np.uint64),
        )

    @staticmethod
    def from_results(results: Sequence[types_pb2.QueryResult]) -> "HitBatch":
        """From per-query messages (a shard too old to pack its answer, or one query's few hits)."""
        return HitBatch.build(
            [r.ids for r in results], [np.fromiter(r.scores, dtype=np.float32, count=len(r.scores)) for r in results],
            [r.strategy for r in results], [r.estimated_cost_us for r in results], [r.filter_matches for r in results],
        )

    @staticmethod
    def from_proto(packed: types_pb2.PackedHits) -> "HitBatch":
        """Read a PackedHits, checking that its arrays agree with each other (ValueError if not)."""
        try:
            counts = np.frombuffer(packed.counts, dtype="<u4").astype(np.int64)
            scores = np.frombuffer(packed.scores, dtype="<f4")
            id_lengths = np.frombuffer(packed.id_lengths, dtype="<u4").astype(np.int64)
            strategies = np.frombuffer(packed.strategies, dtype=np.uint8)
            costs = np.frombuffer(packed.estimated_cost_us, dtype="<f4")
            matches = np.frombuffer(packed.filter_matches, dtype="<u8")
        except ValueError as error:  # a length that is not a whole number of elements
            raise ValueError(f"malformed packed hits: {error}") from None
        n, total = len(counts), int(counts.sum())
        if len(scores) != total or len(id_lengths) != total:
            raise ValueError(f"malformed packed hits: counts add up to {total}, but there are {len(scores)} scores and {len(id_lengths)} ids")
        if int(id_lengths.sum()) != len(packed.ids):
            raise ValueError(f"malformed packed hits: id lengths add up to {int(id_lengths.sum())} bytes, the ids are {len(packed.ids)}")
        if not (len(strategies) == len(costs) == len(matches) == n):
            raise ValueError(f"malformed packed hits: {n} queries, but {len(strategies)} strategies, {len(costs)} costs, {len(matches)} match counts")
        return HitBatch(counts, scores, id_lengths, packed.ids, strategies, costs, matches)

    # -- reading ------------------------------------------------------------------------------------

    def to_proto(self) -> types_pb2.PackedHits:
        return types_pb2.PackedHits(
            counts=self.counts.astype("<u4").tobytes(),
            scores=self.scores.astype("<f4", copy=False).tobytes(),
            id_lengths=self.id_lengths.astype("<u4").tobytes(),
            ids=self.ids,
            strategies=self.strategies.astype(np.uint8, copy=False).tobytes(),
            estimated_cost_us=self.estimated_cost_us.astype("<f4", copy=False).tobytes(),
            filter_matches=self.filter_matches.astype("<u8", copy=False).tobytes(),
        )

    def id_lists(self) -> list[list[str]]:
        """Each query's ids, decoded."""
        view = memoryview(self.ids)
        bounds = _bounds(self.id_lengths).tolist()
        flat = [str(view[s:e], "utf-8") for s, e in zip(bounds, bounds[1:])]
        rows = _bounds(self.counts).tolist()
        return [flat[s:e] for s, e in zip(rows, rows[1:])]

    def score_lists(self) -> list[list[float]]:
        flat = self.scores.tolist()
        rows = _bounds(self.counts).tolist()
        return [flat[s:e] for s, e in zip(rows, rows[1:])]

    def per_query(self) -> list[tuple[list[str], list[float], int, float, int]]:
        """Each query's (ids, scores, strategy, estimated cost, filter matches), as Python values."""
        return list(zip(
            self.id_lists(), self.score_lists(), self.strategies.tolist(), self.estimated_cost_us.tolist(), self.filter_matches.tolist()
        ))

    def to_results(self) -> list[types_pb2.QueryResult]:
        return [
            types_pb2.QueryResult(ids=ids, scores=scores, strategy=strategy, estimated_cost_us=cost, filter_matches=matches)
            for ids, scores, strategy, cost, matches in self.per_query()
        ]

    def queries(self, start: int, end: int) -> "HitBatch":
        """The hits of queries [start, end) alone."""
        if start == 0 and end == self.n_queries:
            return self
        rows = _bounds(self.counts)
        first, last = int(rows[start]), int(rows[end])
        id_bytes = _bounds(self.id_lengths)
        byte_first, byte_last = int(id_bytes[first]), int(id_bytes[last])
        return HitBatch(
            self.counts[start:end], self.scores[first:last], self.id_lengths[first:last], self.ids[byte_first:byte_last],
            self.strategies[start:end], self.estimated_cost_us[start:end], self.filter_matches[start:end],
        )
