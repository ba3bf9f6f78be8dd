"""The in-memory state of one partition: id map, labels, metadata field index and the vector index.

Not thread-safe on its own and does no I/O: `DurablePartition` serialises writers, logs them, and lets
searches share it. Point ids map to dense internal labels (`IdMap`, numpy columns rather than Python
objects); freed labels are reused so every label-sized structure (index slots, filter bitmaps) follows the
peak live count, not the number of writes ever made.

Search strategy per request:
- no filter: the index's search (ANN, or exact for flat / untrained IVF);
- filter: the allowed set is computed once from the field index as a bitmap; on an HNSW index the way to
  search it (exact over the allowed points, an oversampled unfiltered search filtered after, or the
  graph's own filtered search) is the one of least estimated cost (shard/search_cost.py), and the
  strategy and its estimate go back with each result; an IVF-PQ index scores at most
  `exact_filter_min_points` (or `exact_filter_fraction` of the points) exactly and searches the rest
  restricted to the bitmap; a flat index always scores exactly;
- any query that came back with fewer than min(k, candidates) results (hnswlib under heavy deletes or a
  tight filter) is completed exactly, so a search never returns fewer results than exist.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from quiver.filters import Filter, Metadata
from quiver.specs import PartitionSpec
from quiver.wire.packed_hits import HitBatch
from quiver.wire.points import STRATEGIES
from shard.field_index import FieldIndex
from shard.id_map import IdMap
from shard.indexes import IndexConfig, QueryKnobs, SearchHits, VectorIndex, create_index, load_index
from shard.search_cost import ANN_FILTERED, ANN_POST_FILTERED, EXACT_FILTERED, FilterCosts, FilterPlan, plan_filtered

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchPolicy:
    costs: FilterCosts = field(default_factory=FilterCosts)
    # A filtered-search strategy used whatever it costs ("" = the cheapest): tests, and an operator
    # checking one path's recall.
    force_filtered: str = ""
    # IVF-PQ (no cost model yet): filters allowing at most this share or count of the points are exact.
    exact_filter_fraction: float = 0.02
    exact_filter_min_points: int = 1024


@dataclass
class QueryHits:
    ids: list[str]
    scores: np.ndarray
    labels: np.ndarray
    strategy: str  # "ann" | "ann_filtered" | "ann_post_filtered" | "exact" | "exact_filtered"
    estimated_cost_us: float = 0.0  # a filtered search's estimate for the strategy chosen (search_cost)
    matches: int = 0  # points the filter allowed in this partition (0 without a filter, as on the wire)


class PartitionState:
    def __init__(
        self, spec: PartitionSpec, index: VectorIndex | None = None, fields: FieldIndex | None = None, *, vector_dir: str | None = None,
    ) -> None:
        self.spec = spec
        self.index = index or create_index(IndexConfig(spec.index_kind, spec.dim, spec.space, spec.index_params, vector_dir))
        self.fields = fields or FieldIndex()
        self.ids = IdMap()
        self.live = np.zeros(1024, dtype=bool)  # by label: what exact scans and filter complements cover

    # -- writes -------------------------------------------------------------------------------------

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata] | None) -> None:
        """Insert or replace; `vectors` are already prepared for the index space."""
        labels = self.ids.assign(ids)
        if self.ids.slots > len(self.live):
            grown = np.zeros(max(self.ids.slots, 2 * len(self.live)), dtype=bool)
            grown[: len(self.live)] = self.live
            self.live = grown
        self.index.add(labels, vectors)
        for position, label in enumerate(labels.tolist()):
            self.fields.set(label, metadata[position] if metadata else {})
        self.live[labels] = True

    def delete(self, ids: Sequence[str]) -> int:
        labels = self.ids.remove(ids)
        if not labels:
            return 0
        array = np.asarray(labels, dtype=np.int64)
        self.index.remove(array)
        for label in labels:
            self.fields.remove(label)
        self.live[array] = False
        return len(labels)

    def ids_matching(self, flt: Filter) -> list[str]:
        labels = np.flatnonzero(self.fields.evaluate(flt, self.live))
        return self.ids.ids_of(labels)

    # -- reads --------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.ids)

    def get(self, ids: Sequence[str]) -> list[tuple[str, int, Metadata]]:
        labels = self.ids.labels_of(ids).tolist()
        return [(i, label, self.fields.get(label)) for i, label in zip(ids, labels) if label >= 0]

    def vectors_of(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return self.index.vectors(labels)

    def search(
        self, queries: np.ndarray, k: int, flt: Filter | None, knobs: QueryKnobs, force_exact: bool, policy: SearchPolicy,
        packed: bool = False,
    ) -> list[QueryHits] | HitBatch:
        """Each query's hits, or (packed) the whole batch's in flat arrays with the ids left undecoded."""
        n = len(queries)
        if flt is None:
            candidates = self.count
            if candidates == 0:
                return self._answer(packed, SearchHits.empty(n, k), ["exact"] * n)
            if force_exact:
                return self._answer(packed, self.index.search_exact(queries, k, self.live), ["exact"] * n)
            take = min(k, candidates)
            hits = self.index.search(queries, take, knobs, None)
            strategy = "exact" if self.index.exact else "ann"
            allowed, plan = None, None
        else:
            allowed = self.fields.evaluate(flt, self.live)
            candidates = int(np.count_nonzero(allowed))  # the labels themselves only where scored exactly
            if candidates == 0:
                return self._answer(packed, SearchHits.empty(n, k), ["exact_filtered"] * n, FilterPlan(EXACT_FILTERED, 0.0, 0))
            take = min(k, candidates)
            plan = self._plan(candidates, take, knobs, policy, force_exact)
            if plan.strategy == EXACT_FILTERED:
                hits = self.index.search_subset(queries, take, np.flatnonzero(allowed))
                return self._answer(packed, self._pad(hits, k), ["exact_filtered"] * n, plan)
            if plan.strategy == ANN_POST_FILTERED:
                # At the caller's ef: asking for more results widens hnswlib's candidate list by itself.
                wide = self.index.search(queries, plan.candidates, knobs, None)
                hits = self._pad(_keep_allowed(wide, allowed, take), take)
            else:
                hits = self.index.search(queries, take, knobs, allowed)
            strategy = plan.strategy
        strategies = [strategy] * n
        short = _short_rows(hits.labels, take)
        if len(short):
            if allowed is not None:
                exact = self.index.search_subset(queries[short], take, np.flatnonzero(allowed))
            else:
                exact = self.index.search_exact(queries[short], take, self.live)
            hits.scores[short], hits.labels[short] = exact.scores, exact.labels
            for row in short.tolist():
                strategies[row] = "exact_filtered" if allowed is not None else "exact"
        return self._answer(packed, self._pad(hits, k), strategies, plan)

    def _plan(self, matches: int, take: int, knobs: QueryKnobs, policy: SearchPolicy, force_exact: bool) -> FilterPlan:
        dim = self.spec.dim
        if force_exact or self.index.exact:
            return FilterPlan(EXACT_FILTERED, policy.costs.exact(matches, dim), matches)
        if self.spec.index_kind != "hnsw":
            small = matches <= max(policy.exact_filter_min_points, policy.exact_filter_fraction * self.count)
            return FilterPlan(EXACT_FILTERED if small else ANN_FILTERED, 0.0, matches)
        ef = knobs.ef_search or int(self.index.effective_params()["ef_search"])
        return plan_filtered(matches, self.count, take, ef, dim, policy.costs, graph=True, force=policy.force_filtered)

    @staticmethod
    def _pad(hits: SearchHits, k: int) -> SearchHits:
        if hits.labels.shape[1] == k:
            return hits
        padded = SearchHits.empty(len(hits.labels), k)
        width = hits.labels.shape[1]
        padded.scores[:, :width], padded.labels[:, :width] = hits.scores, hits.labels
        return padded

    def _answer(self, packed: bool, hits: SearchHits, strategies: list[str], plan: FilterPlan | None = None) -> list[QueryHits] | HitBatch:
        return self._pack(hits, strategies, plan) if packed else self._package(hits, strategies, plan)

    def _pack(self, hits: SearchHits, strategies: list[str], plan: FilterPlan | None) -> HitBatch:
        found = hits.labels >= 0
        lengths, id_bytes = self.ids.id_bytes_of(hits.labels[found])
        n = len(hits.labels)
        cost, matches = (round(plan.estimated_cost_us, 1), plan.matches) if plan is not None else (0.0, 0)
        return HitBatch(
            counts=found.sum(axis=1).astype(np.int64), scores=hits.scores[found], id_lengths=lengths, ids=id_bytes,
            strategies=np.array([STRATEGIES[s] for s in strategies], dtype=np.uint8),
            estimated_cost_us=np.full(n, cost, dtype=np.float32), filter_matches=np.full(n, matches, dtype=np.uint64),
        )

    def _package(self, hits: SearchHits, strategies: list[str], plan: FilterPlan | None = None) -> list[QueryHits]:
        ids_of = self.ids.ids_of
        cost, matches = (round(plan.estimated_cost_us, 1), plan.matches) if plan is not None else (0.0, 0)
        out = []
        for row in range(len(hits.labels)):
            labels = hits.labels[row]
            # Hits first, padding after: a row whose last slot is a hit is all hits (no mask to apply).
            found = labels if len(labels) == 0 or labels[-1] >= 0 else labels[labels >= 0]
            out.append(QueryHits(ids_of(found), hits.scores[row, : len(found)], found, strategies[row], cost, matches))
        return out

    # -- snapshots ----------------------------------------------------------------------------------

    def to_sections(self) -> dict[str, bytes | memoryview]:
        try:
            index = self.index.to_bytes()
        except (OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
            # Staging through scratch files failed (a full disk, most likely): pack in memory instead, so the
            # snapshot still has its chance to fit; only the memory peak is higher.
            _log.warning("partition %s: cannot stage its snapshot in scratch files (%s); packing it in memory", self.spec.key, exc)
            index = self.index.to_bytes(in_memory=True)
        return {
            "state": json.dumps({"spec": self.spec.to_json()}).encode("utf-8"),
            "ids": self.ids.to_bytes(),
            "fields": self.fields.to_bytes(),
            "index": index,
        }

    @classmethod
    def from_sections(cls, sections: dict[str, bytes], vector_dir: str | None = None) -> "PartitionState":
        state = json.loads(sections["state"])
        spec = PartitionSpec.from_json(state["spec"])
        index = load_index(IndexConfig(spec.index_kind, spec.dim, spec.space, spec.index_params, vector_dir), sections["index"])
        partition = cls(spec, index, FieldIndex.from_bytes(sections["fields"]))
        # Older snapshots hold the ids as a JSON list by label (None: a free label).
        partition.ids = IdMap.from_bytes(sections["ids"]) if "ids" in sections else IdMap.from_list(state["label_ids"])
        partition.live = np.zeros(max(1024, partition.ids.slots), dtype=bool)
        partition.live[partition.ids.live_labels()] = True
        return partition


_NO_ROWS = np.zeros(0, dtype=np.int64)


def _short_rows(labels: np.ndarray, take: int) -> np.ndarray:
    """The rows with fewer than `take` hits. Every index lists a row's hits first and its padding (-1) after
    them, so a row is short exactly when its `take`-th slot is padding: one column read, not a count of
    every row (which cost a single query more than 10 us)."""
    if take == 0:
        return _NO_ROWS
    if labels.shape[1] < take:  # an answer narrower than asked: every row is short
        return np.arange(len(labels), dtype=np.int64)
    last = labels[:, take - 1]
    if len(last) == 1:
        return _NO_ROWS if last[0] >= 0 else np.zeros(1, dtype=np.int64)
    return np.flatnonzero(last < 0)


def _keep_allowed(hits: SearchHits, allowed: np.ndarray, take: int) -> SearchHits:
    """The first `take` allowed results of each row of an unfiltered search, best first; a row with fewer
    ends in -1 labels (and is completed exactly by the caller), and a search narrower than `take` gives
    narrower rows (the caller pads them)."""
    found = hits.labels >= 0
    keep = found.copy()
    keep[found] = allowed[hits.labels[found]]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :take]
    labels = np.take_along_axis(hits.labels, order, axis=1)
    scores = np.take_along_axis(hits.scores, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
    labels[~kept], scores[~kept] = -1, -np.inf
    return SearchHits(scores, labels)
