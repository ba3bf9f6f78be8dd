"""The query workload over a dataset: which query each call sends, with or without a filter, and the
ground truth each call is scored against.

Filters of a chosen selectivity s: every point gets a metadata field `sel_bucket` = int(u / s) for a
fixed-seed uniform u in [0, 1), so the filter `sel_bucket == 0` selects each point with probability s
(s = 0.01 makes buckets 0..99). A filtered query is scored against brute force over the selected
points only, so recall means the same thing with and without a filter.

Calls cycle through the query rows in order; with a filter fraction f, a fixed-seed f of the rows
carry the filter (every call of such a row does).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.datasets import Dataset, exact_ground_truth
from quiver.filters import Eq, Filter, Metadata

FILTER_FIELD = "sel_bucket"
FILTER: Filter = Eq(FILTER_FIELD, 0)
BUCKET_SEED = 11
FILTERED_ROWS_SEED = 12


def selectivity_buckets(n: int, selectivity: float, seed: int = BUCKET_SEED) -> np.ndarray:
    """int(u / selectivity) per point: bucket 0 holds each point with probability `selectivity`."""
    if not 0 < selectivity <= 1:
        raise ValueError(f"selectivity must be in (0, 1], got {selectivity}")
    u = np.random.default_rng(seed).random(n)
    return (u / selectivity).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Workload:
    dataset: Dataset
    k: int
    selectivity: float | None = None
    filter_fraction: float = 0.0
    buckets: np.ndarray | None = None  # per base point, when filtering
    filtered_rows: np.ndarray | None = None  # bool per query row
    filtered_truth: np.ndarray | None = None  # exact top-k among selected points, per query row

    @property
    def n_queries(self) -> int:
        return len(self.dataset.queries)

    def query_of(self, slot: int) -> tuple[int, bool]:
        """(query row, filtered?) for call number `slot`."""
        row = slot % self.n_queries
        return row, bool(self.filtered_rows is not None and self.filtered_rows[row])

    def truth(self, row: int, filtered: bool) -> np.ndarray:
        source = self.filtered_truth if filtered else self.dataset.ground_truth
        assert source is not None
        return source[row, : self.k]

    def hits(self, row: int, filtered: bool, ids: tuple[str, ...]) -> int:
        """How many of the exact top-k are among the first k returned ids (ids are base row numbers)."""
        wanted = {int(t) for t in self.truth(row, filtered) if t >= 0}
        return len(wanted & {int(i) for i in ids[: self.k] if i.isdigit()})

    def metadata(self, rows: np.ndarray | range) -> list[Metadata] | None:
        if self.buckets is None:
            return None
        return [{FILTER_FIELD: int(self.buckets[r])} for r in rows]

    @property
    def selected_points(self) -> int | None:
        return None if self.buckets is None else int((self.buckets == 0).sum())


def build_workload(dataset: Dataset, k: int, selectivity: float | None = None, filter_fraction: float = 1.0) -> Workload:
    if dataset.ground_truth.shape[1] < k:
        raise ValueError(f"ground truth holds {dataset.ground_truth.shape[1]} neighbours per query, fewer than k={k}")
    if selectivity is None:
        return Workload(dataset, k)
    if not 0 < filter_fraction <= 1:
        raise ValueError(f"filter fraction must be in (0, 1], got {filter_fraction}")
    buckets = selectivity_buckets(len(dataset.base), selectivity)
    selected = np.flatnonzero(buckets == 0)
    if len(selected) < k:
        raise ValueError(f"selectivity {selectivity} selects {len(selected)} of {len(dataset.base)} points, fewer than k={k}")
    filtered_rows = np.random.default_rng(FILTERED_ROWS_SEED).random(len(dataset.queries)) < filter_fraction
    truth = np.full((len(dataset.queries), k), -1, dtype=np.int64)
    if filtered_rows.any():
        found = exact_ground_truth(dataset.base[selected], dataset.queries[filtered_rows], k, dataset.metric)
        truth[filtered_rows] = selected[found]
    return Workload(dataset, k, selectivity, filter_fraction, buckets, filtered_rows, truth)
