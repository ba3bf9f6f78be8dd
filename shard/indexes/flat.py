"""Exact (flat) index: brute force over a raw vector arena with BLAS.

faiss's IndexFlat would do the same arithmetic, but it has no in-place row replacement, and labels here
are reused; scoring the arena directly keeps replace/delete O(1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from shard.indexes.arena import VectorArena
from shard.indexes.base import IndexConfig, QueryKnobs, SearchHits
from shard.indexes.blob_container import pack, unpack


class FlatIndex:
    def __init__(self, config: IndexConfig, arena: VectorArena | None = None) -> None:
        self.config = config
        self._arena = arena or VectorArena(config.dim, directory=config.vector_dir)

    @property
    def trained(self) -> bool:
        return True

    @property
    def exact(self) -> bool:
        return True

    def effective_params(self) -> dict[str, Any]:
        return {}

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._arena.put(labels, vectors)

    def remove(self, labels: np.ndarray) -> None:
        self._arena.remove(labels)

    def search(self, queries: np.ndarray, k: int, knobs: QueryKnobs, allowed: np.ndarray | None) -> SearchHits:
        return self._arena.search_exact(queries, k, allowed, self.config.space)

    def search_subset(self, queries: np.ndarray, k: int, labels: np.ndarray) -> SearchHits:
        return self._arena.search_labels(queries, k, labels, self.config.space)

    def search_exact(self, queries: np.ndarray, k: int, mask: np.ndarray) -> SearchHits:
        return self._arena.search_exact(queries, k, mask, self.config.space)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        return self._arena.get(labels)

    @property
    def wants_training(self) -> bool:
        return False

    def train(self, sample: np.ndarray | None) -> int:
        return 0

    def memory_bytes(self) -> int:
        return self._arena.memory_bytes()

    def to_bytes(self, in_memory: bool = False) -> bytes | memoryview:
        directory = None if in_memory else self.config.vector_dir
        return pack({}, {"arena": self._arena.to_buffer(directory)}, directory)

    @classmethod
    def from_bytes(cls, config: IndexConfig, data: bytes) -> "FlatIndex":
        _, blobs = unpack(data)
        return cls(config, VectorArena.from_bytes(config.dim, blobs["arena"], config.vector_dir))
