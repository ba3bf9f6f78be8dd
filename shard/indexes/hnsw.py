"""HNSW adapter over hnswlib.

- Growth: the graph is resized geometrically, never rebuilt.
- Deletes: hnswlib's mark_deleted. The partition reuses freed labels, and re-adding a deleted label makes
  hnswlib unmark it and overwrite its slot in place, so memory follows the peak live count under churn.
- Replacing a live label's vector is hnswlib's in-place update (the old vector is gone at once).
- Filters: a bytes bitmap's __getitem__ is the filter callable; it is a C-level lookup, the cheapest
  callable hnswlib can take, yet hnswlib takes the GIL for every node it visits, so the partition prices
  this path against scoring the allowed points exactly and against filtering an oversampled unfiltered
  search (shard/search_cost.py).
- Raw vectors are kept beside the graph in a `VectorArena` (4 x dim bytes a point): exact scoring of an
  allowed set, exact completion and vector reads use it. hnswlib's own get_items builds Python floats
  (about 4 us a 50-d vector here, against 0.5 ns a component for BLAS over the arena), which made exact
  filtered search slower than the graph.
- Snapshots: hnswlib's save_index holds the GIL for the whole write, so it runs in a forked child
  (shard.indexes.forked_call) and the server's event loop and searches go on meanwhile.
- ef is global state in hnswlib, so searches that want a different ef wait until the ones in flight with
  the current ef finish (`_EfGate`), instead of racing on set_ef.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import os
import threading
from typing import Any

import hnswlib
import numpy as np

from shard.indexes.arena import VectorArena
from shard.indexes.base import IndexConfig, QueryKnobs, SearchHits, WouldWait
from shard.indexes.blob_container import map_file, pack, staging_dir, unpack
from shard.indexes.forked_call import call_in_child

DEFAULTS = {"m": 16, "ef_construction": 200, "ef_search": 64}
SAVE_TIMEOUT_S_PER_GIB = 60.0  # a child saving the graph is killed past this (it writes ~1 GiB/s here)


class _EfGate:
    """Lets any number of searches share one ef value; switching ef waits for them to drain."""

    def __init__(self, index: hnswlib.Index, ef: int) -> None:
        self._index = index
        self._ef = ef
        self._active = 0
        self._cond = threading.Condition()
        index.set_ef(ef)

    def enter(self, ef: int, wait: bool = True) -> None:
        """Starts a search at `ef` (then `leave()`); WouldWait instead of waiting when `wait` is false.
        Methods, not a context manager: a generator-based one cost each query more than this whole gate."""
        with self._cond:
            if not wait and self._ef != ef and self._active > 0:
                raise WouldWait(f"ef {self._ef} is in use by {self._active} searches; this one wants {ef}")
            while self._ef != ef and self._active > 0:
                self._cond.wait()
            if self._ef != ef:
                self._index.set_ef(ef)
                self._ef = ef
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()


_GET_ITEMS_BYTES = 2 * 2**20


class HnswIndex:
    def __init__(self, config: IndexConfig, index: hnswlib.Index | None = None, arena: VectorArena | None = None) -> None:
        self.config = config
        self._params = {key: int(config.params.get(key) or default) for key, default in DEFAULTS.items()}
        if index is None:
            index = hnswlib.Index(space=config.space, dim=config.dim)
            index.init_index(max_elements=1024, M=self._params["m"], ef_construction=self._params["ef_construction"])
        self._index = index
        self._gate = _EfGate(index, self._params["ef_search"])
        self._arena = arena if arena is not None else _arena_from_graph(index, config.dim, config.vector_dir)

    @property
    def trained(self) -> bool:
        return True

    @property
    def exact(self) -> bool:
        return False

    def effective_params(self) -> dict[str, Any]:
        return dict(self._params)

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels) == 0:
            return
        needed = int(labels.max()) + 1
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, 2 * capacity))
        self._index.add_items(vectors, labels, num_threads=-1)
        self._arena.put(labels, vectors)

    def remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self._index.mark_deleted(label)
        self._arena.remove(labels)

    def _to_scores(self, distances: np.ndarray) -> np.ndarray:
        # hnswlib returns 1 - ip for "ip" and squared L2 for "l2".
        return (1.0 - distances) if self.config.space == "ip" else -distances

    def search(self, queries: np.ndarray, k: int, knobs: QueryKnobs, allowed: np.ndarray | None) -> SearchHits:
        ef = knobs.ef_search or self._params["ef_search"]  # hnswlib itself searches with max(ef, k)
        if k == 0:
            return SearchHits.empty(len(queries), k)
        predicate = bytes(allowed.view(np.uint8)).__getitem__ if allowed is not None else None
        self._gate.enter(ef, wait=not knobs.no_wait)
        try:
            try:
                labels, distances = self._index.knn_query(queries, k=k, num_threads=knobs.threads or -1, filter=predicate)
            except RuntimeError:
                hits = SearchHits.empty(len(queries), k)
                # hnswlib refuses a whole batch when it cannot fill k for one query (many deletes, tight
                # filters). Ask again query by query, so only those come back short (and the partition
                # completes them exactly) while the rest keep their ANN answer.
                for row in range(len(queries)):
                    try:
                        labels, distances = self._index.knn_query(queries[row : row + 1], k=k, num_threads=1, filter=predicate)
                    except RuntimeError:
                        continue
                    hits.labels[row] = labels[0].astype(np.int64)
                    hits.scores[row] = self._to_scores(distances)[0]
                return hits
        finally:
            self._gate.leave()
        return SearchHits(self._to_scores(distances).astype(np.float32, copy=False), labels.astype(np.int64))

    def search_subset(self, queries: np.ndarray, k: int, labels: np.ndarray) -> SearchHits:
        if len(labels) == 0:
            return SearchHits.empty(len(queries), k)
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
        return int(self._index.index_file_size()) + self._arena.memory_bytes()

    def to_bytes(self, in_memory: bool = False) -> bytes | memoryview:
        """hnswlib's own index format (its Python binding writes it only to a file) and the raw vectors. With
        a vector directory the container is a map of a scratch file there (blob_container), so a snapshot
        holds no copy of the index in process memory."""
        directory = None if in_memory else self.config.vector_dir
        with staging_dir(directory) as tmp:
            path = os.path.join(tmp, "index.bin")
            size = int(self._index.index_file_size())
            # In a child: save_index holds the GIL for the whole write (shard.indexes.forked_call).
            timeout_s = max(60.0, SAVE_TIMEOUT_S_PER_GIB * size / 2**30)
            if not call_in_child(functools.partial(self._index.save_index, path), "saving the HNSW graph", timeout_s):
                self._index.save_index(path)
            written = os.path.getsize(path)
            if written != size:
                # hnswlib does not check its writes: on a full disk it leaves a short file and says nothing.
                raise OSError(errno.ENOSPC, f"hnswlib wrote {written} of {size} bytes of its index (disk full?)", path)
            if directory is None:
                with open(path, "rb") as f:
                    graph: bytes | memoryview = f.read()
            else:
                graph = map_file(path)
        return pack({"params": self._params}, {"hnswlib": graph, "vectors": self._arena.to_buffer(directory)}, directory)

    @classmethod
    def from_bytes(cls, config: IndexConfig, data: bytes) -> "HnswIndex":
        header, blobs = unpack(data)
        index = hnswlib.Index(space=config.space, dim=config.dim)
        with staging_dir(None) as tmp:
            path = os.path.join(tmp, "index.bin")
            with open(path, "wb") as f:
                f.write(blobs["hnswlib"])
            index.load_index(path, max_elements=0)
        # A snapshot from before the arena has none: it is rebuilt from the graph (slowly, once).
        arena = VectorArena.from_bytes(config.dim, blobs["vectors"], config.vector_dir) if "vectors" in blobs else None
        return cls(dataclasses.replace(config, params=header["params"]), index, arena)


def _arena_from_graph(index: hnswlib.Index, dim: int, directory: str | None) -> VectorArena:
    """The vectors of an hnswlib graph's live labels, read a piece at a time: get_items builds Python floats
    first (~40 B a component), and refuses a deleted label, which get_ids_list still lists."""
    labels = np.asarray(index.get_ids_list(), dtype=np.int64)
    arena = VectorArena(dim, capacity=max(1024, int(labels.max()) + 1 if len(labels) else 1024), directory=directory)
    rows = max(16, _GET_ITEMS_BYTES // (40 * dim))
    for start in range(0, len(labels), rows):
        part = labels[start : start + rows]
        try:
            arena.put(part, np.asarray(index.get_items(part, return_type="numpy"), dtype=np.float32))
        except RuntimeError:
            # A deleted label not reused since is still listed, and get_items refuses it: one at a time.
            for label in part.tolist():
                try:
                    vector = index.get_items([label], return_type="numpy")
                except RuntimeError:
                    continue
                arena.put(np.array([label], dtype=np.int64), np.asarray(vector, dtype=np.float32))
    return arena
