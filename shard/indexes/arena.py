"""A label-indexed store of raw float32 vectors that grows geometrically.

Used by the flat index (which is exact search over it) and by IVF-PQ for the points written before
training and for exact re-ranking (`refine`). Labels are dense and reused, so the arena's size follows
the peak number of live points.
"""
from __future__ import annotations

import io

import numpy as np

from shard.indexes.base import SearchHits
from shard.indexes.exact import chunk_rows, topk_over_chunks


class VectorArena:
    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._live = np.zeros(capacity, dtype=bool)
        # Labels written or removed since track_changes(): what a background build must catch up on.
        self._changed: set[int] | None = None

    def track_changes(self) -> None:
        self._changed = set()

    def take_changes(self) -> np.ndarray:
        changed, self._changed = self._changed or set(), None
        return np.fromiter(changed, dtype=np.int64, count=len(changed))

    def is_live(self, labels: np.ndarray) -> np.ndarray:
        inside = labels < len(self._live)
        out = np.zeros(len(labels), dtype=bool)
        out[inside] = self._live[labels[inside]]
        return out

    def _ensure(self, max_label: int) -> None:
        if max_label < len(self._live):
            return
        capacity = max(max_label + 1, 2 * len(self._live))
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[: len(self._vectors)] = self._vectors
        live = np.zeros(capacity, dtype=bool)
        live[: len(self._live)] = self._live
        self._vectors, self._live = vectors, live

    def put(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels) == 0:
            return
        self._ensure(int(labels.max()))
        self._vectors[labels] = vectors
        self._live[labels] = True
        if self._changed is not None:
            self._changed.update(labels.tolist())

    def remove(self, labels: np.ndarray) -> None:
        labels = labels[labels < len(self._live)]
        self._live[labels] = False
        if self._changed is not None:
            self._changed.update(labels.tolist())

    def get(self, labels: np.ndarray) -> np.ndarray:
        return self._vectors[labels]

    def search_exact(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, space: str) -> SearchHits:
        """Exact top-k over the live vectors (and `allowed`, a mask over labels, if given), scored a chunk of
        the arena at a time: a run of live rows is scored in place, a chunk with holes is gathered first."""
        return topk_over_chunks(queries, self._chunks(chunk_rows(self.dim), allowed), k, space)

    def _chunks(self, rows: int, allowed: np.ndarray | None):  # type: ignore[no-untyped-def]
        end = len(self._live)
        for start in range(0, end, rows):
            stop = min(end, start + rows)
            live = self._live[start:stop]
            if allowed is not None:
                live = live & _mask_part(allowed, start, stop)
            offsets = np.flatnonzero(live)
            if len(offsets) == stop - start:
                yield np.arange(start, stop, dtype=np.int64), self._vectors[start:stop]
            elif len(offsets):
                yield offsets + start, self._vectors[start:stop][offsets]

    def live_labels(self) -> np.ndarray:
        return np.flatnonzero(self._live)

    @property
    def count(self) -> int:
        return int(self._live.sum())

    def memory_bytes(self) -> int:
        return int(self._vectors.nbytes + self._live.nbytes)

    def to_bytes(self) -> bytes:
        labels = self.live_labels()
        buf = io.BytesIO()
        np.save(buf, labels.astype(np.int64))
        np.save(buf, self._vectors[labels])
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, dim: int, data: bytes) -> "VectorArena":
        buf = io.BytesIO(data)
        labels = np.load(buf)
        vectors = np.load(buf)
        arena = cls(dim, capacity=max(1024, int(labels.max()) + 1 if len(labels) else 1024))
        arena.put(labels, vectors)
        return arena


def _mask_part(mask: np.ndarray, start: int, stop: int) -> np.ndarray:
    """mask[start:stop], padded with False where the mask is shorter than the arena."""
    part = mask[start:stop]
    if len(part) == stop - start:
        return part
    padded = np.zeros(stop - start, dtype=bool)
    padded[: len(part)] = part
    return padded
