"""The in-memory state of one partition: id map, labels, metadata field index and the vector index.

Not thread-safe on its own and does no I/O: `DurablePartition` serialises writers, logs them, and lets
searches share it. Point ids map to dense internal labels; freed labels are reused so every label-sized
structure (index slots, filter bitmaps) follows the peak live count, not the number of writes ever made.

Search strategy per request:
- no filter: the index's search (ANN, or exact for flat / untrained IVF);
- filter: the allowed set is computed once from the field index as a bitmap; when it holds at most
  `exact_filter_fraction` of the live points (or at most `exact_filter_min_points`) the allowed points
  are scored exactly, otherwise the index searches restricted to the bitmap;
- any query that came back with fewer than min(k, candidates) results (hnswlib under heavy deletes or a
  tight filter) is completed exactly, so a search never returns fewer results than exist.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from quiver.filters import Filter, Metadata
from quiver.specs import PartitionSpec
from shard.field_index import FieldIndex
from shard.indexes import IndexConfig, QueryKnobs, SearchHits, VectorIndex, create_index, load_index


@dataclass(frozen=True)
class SearchPolicy:
    exact_filter_fraction: float = 0.02
    exact_filter_min_points: int = 1024


@dataclass
class QueryHits:
    ids: list[str]
    scores: np.ndarray
    labels: np.ndarray
    strategy: str  # "ann" | "ann_filtered" | "exact" | "exact_filtered"


class PartitionState:
    def __init__(self, spec: PartitionSpec, index: VectorIndex | None = None, fields: FieldIndex | None = None) -> None:
        self.spec = spec
        self.index = index or create_index(IndexConfig(spec.index_kind, spec.dim, spec.space, spec.index_params))
        self.fields = fields or FieldIndex()
        self.id_to_label: dict[str, int] = {}
        self.label_ids: list[str | None] = []
        self.free_labels: list[int] = []
        self.live = np.zeros(1024, dtype=bool)

    # -- writes -------------------------------------------------------------------------------------

    def _allocate(self, point_id: str) -> int:
        if self.free_labels:
            label = self.free_labels.pop()
            self.label_ids[label] = point_id
        else:
            label = len(self.label_ids)
            self.label_ids.append(point_id)
            if label >= len(self.live):
                grown = np.zeros(2 * len(self.live), dtype=bool)
                grown[: len(self.live)] = self.live
                self.live = grown
        self.id_to_label[point_id] = label
        return label

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata] | None) -> None:
        """Insert or replace; `vectors` are already prepared for the index space."""
        labels = np.fromiter(
            (self.id_to_label.get(i) if i in self.id_to_label else self._allocate(i) for i in ids),
            dtype=np.int64,
            count=len(ids),
        )
        self.index.add(labels, vectors)
        for position, label in enumerate(labels.tolist()):
            self.fields.set(label, metadata[position] if metadata else {})
        self.live[labels] = True

    def delete(self, ids: Sequence[str]) -> int:
        labels = [self.id_to_label.pop(i) for i in ids if i in self.id_to_label]
        if not labels:
            return 0
        array = np.asarray(labels, dtype=np.int64)
        self.index.remove(array)
        for label in labels:
            self.fields.remove(label)
            self.label_ids[label] = None
        self.live[array] = False
        self.free_labels.extend(labels)
        return len(labels)

    def ids_matching(self, flt: Filter) -> list[str]:
        labels = np.flatnonzero(self.fields.evaluate(flt, self.live))
        return [self.label_ids[label] for label in labels.tolist()]  # type: ignore[misc]

    # -- reads --------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.id_to_label)

    def get(self, ids: Sequence[str]) -> list[tuple[str, int, Metadata]]:
        return [(i, self.id_to_label[i], self.fields.get(self.id_to_label[i])) for i in ids if i in self.id_to_label]

    def vectors_of(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return self.index.vectors(labels)

    def search(
        self, queries: np.ndarray, k: int, flt: Filter | None, knobs: QueryKnobs, force_exact: bool, policy: SearchPolicy
    ) -> list[QueryHits]:
        n = len(queries)
        if flt is None:
            candidates = self.count
            if candidates == 0:
                return self._package(SearchHits.empty(n, k), ["exact"] * n)
            if force_exact:
                return self._package(self.index.search_exact(queries, k, self.live), ["exact"] * n)
            take = min(k, candidates)
            hits = self.index.search(queries, take, knobs, None)
            strategy = "exact" if self.index.exact else "ann"
            allowed_labels = None
        else:
            allowed = self.fields.evaluate(flt, self.live)
            allowed_labels = np.flatnonzero(allowed)
            candidates = len(allowed_labels)
            if candidates == 0:
                return self._package(SearchHits.empty(n, k), ["exact_filtered"] * n)
            take = min(k, candidates)
            small = candidates <= max(policy.exact_filter_min_points, policy.exact_filter_fraction * self.count)
            if force_exact or small or self.index.exact:
                hits = self.index.search_subset(queries, take, allowed_labels)
                return self._package(self._pad(hits, k), ["exact_filtered"] * n)
            hits = self.index.search(queries, take, knobs, allowed)
            strategy = "ann_filtered"
        strategies = [strategy] * n
        short = np.flatnonzero(hits.found_per_query() < take)
        if len(short):
            if allowed_labels is not None:
                exact = self.index.search_subset(queries[short], take, allowed_labels)
            else:
                exact = self.index.search_exact(queries[short], take, self.live)
            hits.scores[short], hits.labels[short] = exact.scores, exact.labels
            for row in short.tolist():
                strategies[row] = "exact_filtered" if allowed_labels is not None else "exact"
        return self._package(self._pad(hits, k), strategies)

    @staticmethod
    def _pad(hits: SearchHits, k: int) -> SearchHits:
        if hits.labels.shape[1] == k:
            return hits
        padded = SearchHits.empty(len(hits.labels), k)
        width = hits.labels.shape[1]
        padded.scores[:, :width], padded.labels[:, :width] = hits.scores, hits.labels
        return padded

    def _package(self, hits: SearchHits, strategies: list[str]) -> list[QueryHits]:
        label_ids = self.label_ids
        out = []
        for row in range(len(hits.labels)):
            labels = hits.labels[row]
            found = labels[labels >= 0]
            out.append(QueryHits([label_ids[label] for label in found.tolist()], hits.scores[row, : len(found)], found, strategies[row]))  # type: ignore[misc]
        return out

    # -- snapshots ----------------------------------------------------------------------------------

    def to_sections(self) -> dict[str, bytes]:
        state = {"spec": self.spec.to_json(), "label_ids": self.label_ids, "free_labels": self.free_labels}
        return {
            "state": json.dumps(state).encode("utf-8"),
            "fields": self.fields.to_bytes(),
            "index": self.index.to_bytes(),
        }

    @classmethod
    def from_sections(cls, sections: dict[str, bytes]) -> "PartitionState":
        state = json.loads(sections["state"])
        spec = PartitionSpec.from_json(state["spec"])
        index = load_index(IndexConfig(spec.index_kind, spec.dim, spec.space, spec.index_params), sections["index"])
        partition = cls(spec, index, FieldIndex.from_bytes(sections["fields"]))
        partition.label_ids = state["label_ids"]
        partition.free_labels = state["free_labels"]
        partition.live = np.zeros(max(1024, len(partition.label_ids)), dtype=bool)
        for label, point_id in enumerate(partition.label_ids):
            if point_id is not None:
                partition.id_to_label[point_id] = label
                partition.live[label] = True
        return partition
