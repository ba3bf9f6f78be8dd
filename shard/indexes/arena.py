"""A label-indexed store of raw float32 vectors that grows geometrically.

Used by the flat index (which is exact search over it), by HNSW for exact scoring of allowed sets, exact
completion and vector reads, and by IVF-PQ for the points written before training and for exact
re-ranking (`refine`). Labels are dense and reused, so the arena's size follows the peak number of live
points.

Given a directory, the rows live in a memory-mapped file there (created and at once unlinked, so nothing
is left behind by a crash) instead of anonymous memory: they are page cache the kernel can write back
and drop under memory pressure, not process memory, so a shard's resident memory is its index and
columns, and raw vectors beyond RAM cost disk reads on the exact paths rather than an OOM kill. The
file is scratch, never state: snapshots and the WAL hold the vectors. Its space is reserved with
posix_fallocate before use (a write into a sparse mapping on a full disk would be SIGBUS); where that
fails the arena moves to anonymous memory and says so, so a full disk never fails a logged write.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import IO

import faiss
import numpy as np

from shard.indexes.base import SearchHits
from shard.indexes.blob_container import scratch_map
from shard.indexes.exact import chunk_rows, exact_topk_of, topk_over_chunks


_log = logging.getLogger(__name__)


class _MappedRows:
    """float32 rows in an unlinked file under `directory`, mapped; grown by remapping the same file."""

    def __init__(self, directory: Path, dim: int) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="quiver-vectors-", dir=directory)
        self._dim = dim

    def allocate(self, capacity: int) -> np.ndarray:
        """A (capacity, dim) view of the file, its earlier rows kept; OSError (ENOSPC) if it cannot grow."""
        size = max(capacity * self._dim * 4, 1)
        os.posix_fallocate(self._file.fileno(), 0, size)
        return np.memmap(self._file, dtype=np.float32, mode="r+", shape=(capacity, self._dim))

    def close(self) -> None:
        self._file.close()


class VectorArena:
    def __init__(self, dim: int, capacity: int = 1024, directory: Path | str | None = None) -> None:
        self.dim = dim
        self._mapped: _MappedRows | None = None
        self._vectors = None  # type: ignore[assignment]
        if directory is not None:
            try:
                mapped = _MappedRows(Path(directory), dim)
                self._vectors, self._mapped = mapped.allocate(capacity), mapped
            except OSError as exc:
                _log.warning("cannot map raw vectors under %s: %s; keeping them in memory instead", directory, exc)
        if self._vectors is None:
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
        vectors = None
        if self._mapped is not None:
            try:
                vectors = self._mapped.allocate(capacity)  # the same file, longer: rows stay where they are
            except OSError as exc:
                self._to_memory(f"cannot grow the mapped raw vectors to {capacity} rows: {exc}")
        if vectors is None:
            vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            vectors[: len(self._vectors)] = self._vectors
        live = np.zeros(capacity, dtype=bool)
        live[: len(self._live)] = self._live
        self._vectors, self._live = vectors, live

    def _to_memory(self, why: str) -> None:
        _log.warning("%s; keeping them in memory instead", why)
        if self._mapped is not None:
            self._mapped, mapped = None, self._mapped
            self._vectors = np.array(self._vectors)  # off the file before it goes
            mapped.close()

    @property
    def mapped(self) -> bool:
        """Whether the rows live in a mapped file (page cache) rather than process memory."""
        return self._mapped is not None

    def close(self) -> None:
        """Give the mapped file's space back at once (it would go with the last reference anyway)."""
        if self._mapped is not None:
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)
            self._live = np.zeros(0, dtype=bool)
            self._mapped.close()
            self._mapped = None

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
        # np.take copies whole rows and releases the GIL; fancy indexing holds it and is a third slower
        # (6,500 of 130k 50-d rows: 115 against 152 us, and two threads' gathers run side by side).
        return np.asarray(np.take(self._vectors, labels, axis=0))

    def search_labels(self, queries: np.ndarray, k: int, labels: np.ndarray, space: str) -> SearchHits:
        """Exact top-k among `labels` (live rows of this arena). Up to a few queries are scored in place by faiss,
        row by row, without the GIL and without gathering the rows; more queries gather the rows a chunk at
        a time and score them with BLAS, whose one pass over the gathered rows serves every query."""
        rows = self._vectors  # this reference keeps the rows faiss reads alive should a write grow the arena
        if len(queries) > SCORE_IN_PLACE_MAX_QUERIES or len(labels) == 0 or k == 0 or not _inside(labels, len(rows)):
            # (a label outside the rows fails there as an IndexError, as any read of it does)
            return exact_topk_of(queries, labels, self.get, k, space)
        return _score_in_place(np.ascontiguousarray(queries, dtype=np.float32), rows, np.ascontiguousarray(labels, dtype=np.int64), k, space)

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
        """Process memory held: the live mask, and the rows unless they are mapped from a file."""
        return int((0 if self.mapped else self._vectors.nbytes) + self._live.nbytes)

    def to_bytes(self) -> bytes:
        labels = self.live_labels()
        buf = io.BytesIO()
        np.save(buf, labels.astype(np.int64))
        np.save(buf, self._vectors[labels])
        return buf.getvalue()

    def to_buffer(self, directory: Path | str | None) -> bytes | memoryview:
        """`to_bytes()`'s layout; with a directory, written a chunk of rows at a time into an unlinked
        scratch file there and returned as a read-only map of it (no copy of the rows in memory)."""
        if directory is None:
            return self.to_bytes()
        labels = self.live_labels()

        def write(f: IO[bytes]) -> None:
            np.save(f, labels.astype(np.int64))
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (len(labels), self.dim)})
            rows = max(1, (8 * 2**20) // (4 * self.dim))
            for start in range(0, len(labels), rows):
                f.write(np.ascontiguousarray(self._vectors[labels[start : start + rows]], dtype="<f4").tobytes())

        return scratch_map(directory, write)

    @classmethod
    def from_bytes(cls, dim: int, data: bytes, directory: Path | str | None = None) -> "VectorArena":
        buf = io.BytesIO(data)
        labels = np.load(buf)
        vectors = np.load(buf)
        arena = cls(dim, capacity=max(1024, int(labels.max()) + 1 if len(labels) else 1024), directory=directory)
        arena.put(labels, vectors)
        return arena


# Scoring in place costs a dot product per row and query, without the GIL (6,500 of 130k 50-d rows: 105 us a
# query, against 211 us to gather them and score with BLAS, GIL held for the merge); one gather serves every
# query of a batch, so from about 4 queries on it is cheaper (1%, 5% and 50% of 130k rows, measured).
SCORE_IN_PLACE_MAX_QUERIES = 4


def _inside(labels: np.ndarray, n_rows: int) -> bool:
    return int(labels.min()) >= 0 and int(labels.max()) < n_rows


def _score_in_place(queries: np.ndarray, rows: np.ndarray, labels: np.ndarray, k: int, space: str) -> SearchHits:
    """Top-k of rows[labels] per query, best first, padded with (-inf, -1): faiss's *_by_idx scans."""
    n, dim = queries.shape
    values = np.empty((n, k), dtype=np.float32)
    found = np.empty((n, k), dtype=np.int64)
    scan = faiss.knn_inner_products_by_idx if space == "ip" else faiss.knn_L2sqr_by_idx
    # ld 0: every query scans the same labels.
    scan(faiss.swig_ptr(queries), faiss.swig_ptr(rows), faiss.swig_ptr(labels), dim, n, len(rows), len(labels), k,
         faiss.swig_ptr(values), faiss.swig_ptr(found), 0)
    scores = values if space == "ip" else np.negative(values, out=values)  # l2: higher is better
    scores[found < 0] = -np.inf
    return SearchHits(scores, found)


def _mask_part(mask: np.ndarray, start: int, stop: int) -> np.ndarray:
    """mask[start:stop], padded with False where the mask is shorter than the arena."""
    part = mask[start:stop]
    if len(part) == stop - start:
        return part
    padded = np.zeros(stop - start, dtype=bool)
    padded[: len(part)] = part
    return padded
