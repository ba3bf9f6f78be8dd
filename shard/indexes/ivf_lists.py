"""An IndexIVFPQ whose label -> inverted-list map is a numpy column of ours, not faiss's direct map.

Why: deleting, replacing or reading back a point needs to find its code. faiss's hashtable direct map (a
std::unordered_map entry a point, ~50 B with its allocation) cost as much as the 64-byte PQ codes it
served. Here a point costs 4 B: the number of the list holding it. Finding its code scans that one list
(n / nlist ids, a few thousand at most in a well-sized index) with numpy; removing it moves the list's last
entry into its slot, as faiss's own removal does. Without a direct map faiss can still search, train and
add; `add` assigns lists itself (the quantizer's nearest centroid, exactly what add_with_ids computes) and
hands them to `add_core`, so the assignment is known and not computed twice.

Compaction: faiss grows a list's std::vectors by doubling them, and what grown lists leave resident (the
spare capacity of blocks reused from the heap, freed blocks that fragments keep resident) was 30-37 B a
point over the 72 B of codes and ids in a served shard of 10M points, m=64 (175.0 -> 138.1 B a point with
compaction, loadtest/results/bench-memory-ivfpq-10m-2026-12-07-compacted.txt). `ListCompaction` copies every list into a fresh
ArrayInvertedLists, each list allocated at its exact size, and swaps it in; the partition runs it once writes
have been quiet for a while (and a build runs it on its private lists before installing them).

Not thread-safe: adds and removes run under the partition's write lock, searches under its read lock.
"""
from __future__ import annotations

import faiss
import numpy as np

from shard.columns import grow

_MIN_CAPACITY = 1024
# Compaction is worth its copy of the whole index once this fraction of it was written since the last one.
COMPACT_AFTER_CHANGED_FRACTION = 0.01


class LabeledIvf:
    def __init__(self, ivf: faiss.IndexIVFPQ) -> None:
        # An index from an older snapshot carries a hashtable direct map: dropped, the column replaces it.
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)
        self.ivf = ivf
        self.changes = 0  # points added or removed, ever: a compaction that saw it change is stale
        self._changes_at_compaction = 0
        self._list_of = np.full(_MIN_CAPACITY, -1, dtype=np.int32)
        invlists = ivf.invlists
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
                self._ensure(int(ids.max()))
                self._list_of[ids] = list_no

    @property
    def ntotal(self) -> int:
        return int(self.ivf.ntotal)

    def present(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        inside = (labels >= 0) & (labels < len(self._list_of))
        out = np.zeros(len(labels), dtype=bool)
        out[inside] = self._list_of[labels[inside]] >= 0
        return out

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Insert, replacing any label already present (the last of repeated labels wins)."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return
        _, last_first = np.unique(labels[::-1], return_index=True)
        if len(last_first) != len(labels):
            keep = np.sort(len(labels) - 1 - last_first)
            labels, vectors = labels[keep], vectors[keep]
        self.remove(labels[self.present(labels)])
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(labels, dtype=np.int64)
        _, nearest = self.ivf.quantizer.search(x, 1)
        lists = np.ascontiguousarray(nearest[:, 0], dtype=np.int64)
        self.ivf.add_core(len(ids), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        self.changes += len(ids)
        self._ensure(int(ids.max()))
        self._list_of[ids] = lists

    def remove(self, labels: np.ndarray) -> int:
        """Remove the labels present; returns how many were."""
        invlists, code_size = self.ivf.invlists, self.ivf.code_size
        removed = 0
        for label in np.asarray(labels, dtype=np.int64).tolist():
            located = self._locate(label)
            if located is None:
                continue
            list_no, offset, ids = located
            last = len(ids) - 1
            if offset != last:
                code = faiss.rev_swig_ptr(invlists.get_single_code(list_no, last), code_size).copy()
                invlists.update_entry(list_no, offset, int(ids[last]), faiss.swig_ptr(code))
            invlists.resize(list_no, last)
            self.ivf.ntotal -= 1
            self._list_of[label] = -1
            removed += 1
        self.changes += removed
        return removed

    def reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """The PQ reconstruction of each label (all present)."""
        out = np.zeros((len(labels), self.ivf.d), dtype=np.float32)
        for row, label in enumerate(np.asarray(labels, dtype=np.int64).tolist()):
            located = self._locate(label)
            if located is None:
                raise KeyError(f"label {label} is not in the index")
            list_no, offset, _ = located
            self.ivf.reconstruct_from_offset(list_no, offset, faiss.swig_ptr(out[row]))
        return out

    @property
    def wants_compaction(self) -> bool:
        changed = self.changes - self._changes_at_compaction
        return changed > 0 and changed >= COMPACT_AFTER_CHANGED_FRACTION * self.ntotal

    def compact(self) -> None:
        """All at once (lists nobody else reads yet: a build's)."""
        job = ListCompaction(self)
        job.copy(self.ivf.nlist)
        job.install()

    def _replace_lists(self, fresh: faiss.ArrayInvertedLists) -> None:
        self.ivf.replace_invlists(fresh, True)  # the index owns it now and frees the old lists
        fresh.this.disown()
        self._changes_at_compaction = self.changes

    def memory_bytes(self) -> int:
        """Codes and ids in the inverted lists, the label column, the coarse centroids and the codebooks."""
        ivf = self.ivf
        pq = ivf.pq
        return int(
            ivf.ntotal * (ivf.code_size + 8) + self._list_of.nbytes + ivf.nlist * ivf.d * 4 + pq.M * pq.ksub * pq.dsub * 4
        )

    def _locate(self, label: int) -> tuple[int, int, np.ndarray] | None:
        if not 0 <= label < len(self._list_of):
            return None
        list_no = int(self._list_of[label])
        if list_no < 0:
            return None
        size = self.ivf.invlists.list_size(list_no)
        ids = faiss.rev_swig_ptr(self.ivf.invlists.get_ids(list_no), size)
        offset = int(np.flatnonzero(ids == label)[0])
        return list_no, offset, ids

    def _ensure(self, max_label: int) -> None:
        self._list_of = grow(self._list_of, max_label + 1, -1, _MIN_CAPACITY)


class ListCompaction:
    """Copies a LabeledIvf's lists into exactly sized ones, some lists at a time (`copy`, under the read lock:
    searches go on, and writes get the lock between steps), then swaps them in (`install`, under the write
    lock). A write to the index meanwhile makes the copy stale: `install` then drops it and changes nothing."""

    def __init__(self, owner: LabeledIvf) -> None:
        self.owner = owner
        self._changes = owner.changes
        ivf = owner.ivf
        self._nlist = int(ivf.nlist)
        self._fresh: faiss.ArrayInvertedLists | None = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        self._next = 0

    @property
    def stale(self) -> bool:
        return self.owner.changes != self._changes

    @property
    def done(self) -> bool:
        return self._next >= self._nlist

    def copy(self, max_lists: int) -> None:
        assert self._fresh is not None, "installed already"
        if self.stale:
            self._next = self._nlist  # nothing left worth copying: install will drop it
            return
        old = self.owner.ivf.invlists
        end = min(self._nlist, self._next + max_lists)
        for list_no in range(self._next, end):
            size = old.list_size(list_no)
            if size:
                # An empty list's one add_entries allocates exactly `size` entries (doubling starts later).
                self._fresh.add_entries(list_no, size, old.get_ids(list_no), old.get_codes(list_no))
        self._next = end

    def install(self) -> bool:
        """Swap the copy in; False (and nothing changed) if it is stale or unfinished."""
        if self._fresh is None or self.stale or not self.done:
            self._fresh = None
            return False
        self.owner._replace_lists(self._fresh)
        self._fresh = None
        return True
