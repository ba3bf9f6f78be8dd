"""The contract every index kind implements, and the small value types it speaks.

Adapters work on internal *labels* (dense int64, reused after deletes) and on vectors already prepared
for the index's space: under cosine the partition normalises vectors and queries first, so adapters only
know two spaces, "ip" and "l2". Every adapter returns scores where higher is better (ip: inner product;
l2: negative squared distance) and pads missing results with label -1 and score -inf.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class IndexConfig:
    kind: str  # "hnsw" | "ivf_pq" | "flat"
    dim: int
    space: str  # "ip" | "l2"
    params: dict[str, Any] = field(default_factory=dict)
    # Where raw-vector rows may be memory-mapped (a scratch file, see arena.py); None keeps them in memory.
    vector_dir: str | None = None


@dataclass(frozen=True)
class QueryKnobs:
    """Per-query overrides; 0 means the index default."""

    ef_search: int = 0
    nprobe: int = 0
    # Threads one search call may use inside the index (0: every core). A shard server given fewer search
    # threads than the machine has cores (--search-threads: it shares them with other servers) caps each
    # HNSW batch to them too, so co-located servers do not each spread every batch over every core.
    threads: int = 0
    # Set for a search run on the event loop: an index that would have to wait (HNSW switching its global
    # ef while other searches run) raises WouldWait instead, and the caller runs it on a thread.
    no_wait: bool = False


class WouldWait(Exception):
    """The search cannot start without waiting for others (see QueryKnobs.no_wait)."""


@dataclass(frozen=True)
class SearchHits:
    scores: np.ndarray  # float32 (n_queries, k), best first, -inf padding
    labels: np.ndarray  # int64 (n_queries, k), -1 padding

    @staticmethod
    def empty(n_queries: int, k: int) -> "SearchHits":
        return SearchHits(
            np.full((n_queries, k), -np.inf, dtype=np.float32), np.full((n_queries, k), -1, dtype=np.int64)
        )

    def found_per_query(self) -> np.ndarray:
        return (self.labels >= 0).sum(axis=1)


class VectorIndex(Protocol):
    config: IndexConfig

    @property
    def trained(self) -> bool: ...

    @property
    def exact(self) -> bool:
        """True when `search` is already brute force (flat, untrained IVF)."""
        ...

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Insert, or replace the vector of, each label. Labels may be reused after `remove`."""
        ...

    def remove(self, labels: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int, knobs: QueryKnobs, allowed: np.ndarray | None) -> SearchHits:
        """Approximate top-k; `allowed` is a bool bitmap over labels restricting the candidates."""
        ...

    def search_subset(self, queries: np.ndarray, k: int, labels: np.ndarray) -> SearchHits:
        """Top-k over exactly the given labels, as exactly as the stored vectors allow."""
        ...

    def search_exact(self, queries: np.ndarray, k: int, mask: np.ndarray) -> SearchHits:
        """Top-k over the labels where `mask` (a bool bitmap over labels) is true, exactly as `search_subset`
        would, but without a list of labels as long as the partition."""
        ...

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """The stored vectors of labels (normalised under cosine; PQ-reconstructed for IVF-PQ without refine)."""
        ...

    @property
    def wants_training(self) -> bool:
        """True when the index should be trained now (IVF-PQ with enough buffered points)."""
        ...

    def train(self, sample: np.ndarray | None) -> int:
        """Train on `sample` (or the stored points); returns the number of training vectors."""
        ...

    def effective_params(self) -> dict[str, Any]: ...

    def memory_bytes(self) -> int: ...

    def to_bytes(self, in_memory: bool = False) -> bytes | memoryview: ...
