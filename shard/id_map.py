"""IdMap: a partition's point ids <-> its dense internal labels, kept in numpy columns, not Python objects.

Why: a dict of str -> int plus a list of str costs ~160 B a point in CPython objects (the string, the dict
entry, the boxed int), more than the raw id many times over, and a shard holds millions of points. Here a
point costs its id's UTF-8 bytes plus 18 B of columns (22 B once the id bytes pass 4 GiB):

- label -> id: every id's bytes in one growable uint8 buffer, with a uint32 offset (int64 once the buffer
  passes 4 GiB) and a uint16 length per label (0: a free label; ids are never empty). Both columns are
  zero-filled, so their spare capacity is never written and never resident. A label freed and reused
  writes its new id at the buffer's end; the buffer is compacted once its dead bytes outgrow its live ones.
- id -> label: a sorted int64 column of id hashes with the int32 label beside each (a binary search, then
  the id's bytes compared, so a hash collision costs a comparison, never a wrong answer), plus a small dict
  of the ids assigned since the last merge. The dict is merged into the sorted columns by insertion (the
  dict's entries sorted, then one pass over the columns) once it holds an eighth of them or 65,536 ids,
  whichever is fewer: a dict entry with its str costs ~140 B, so an eighth of a 10M-id map would have cost
  17 B a point, while a merge costs one pass over the columns (~50 ms at 10M ids) per 65,536 inserts.
  A removed id's entry in the columns is marked -1 and dropped at the next merge.

Hashes are Python's own `hash()` of the id (per process, randomised), so they are never saved: a snapshot
holds the ids only, and loading rebuilds the hash columns (about 0.3 s a million ids).

Freed labels are reused, lowest first, so label-indexed structures elsewhere (the vector index, filter
bitmaps) follow the peak live count. Not thread-safe: the partition serialises writers.
"""
from __future__ import annotations

import heapq
import io
from typing import Iterable, Iterator, Sequence

import numpy as np

from quiver.wire.packed_hits import gather_bytes, gather_index

_MIN_CAPACITY = 1024
_MIN_RECENT = 4096  # below this, the recent dict is never merged
_MAX_RECENT = 65536  # at most this many ids wait in the recent dict
_MAX_LABELS = 2**31 - 1  # the sorted labels column is int32
_MAX_ID_BYTES = 2**16 - 1  # lengths are uint16; 0 marks a free label
_NARROW_OFFSET_LIMIT = 2**32 - 1  # uint32 offsets address a buffer up to this many bytes
_FORMAT = 1


class IdMap:
    def __init__(self) -> None:
        self._buffer = np.zeros(16 * _MIN_CAPACITY, dtype=np.uint8)
        self._used = 0  # bytes of _buffer written
        self._dead = 0  # bytes of _buffer whose label was freed or re-assigned
        self._offsets = np.zeros(_MIN_CAPACITY, dtype=np.uint32)
        self._lengths = np.zeros(_MIN_CAPACITY, dtype=np.uint16)
        self._slots = 0  # labels ever handed out: the label space is 0.._slots-1
        self._free: list[int] = []  # a heap: the lowest free label is reused first
        self._count = 0
        self._sorted_hashes = np.zeros(0, dtype=np.int64)
        self._sorted_labels = np.zeros(0, dtype=np.int32)
        self._recent: dict[str, int] = {}

    # -- reads --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __contains__(self, point_id: object) -> bool:
        return isinstance(point_id, str) and self.label_of(point_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids_of(self.live_labels()))

    def items(self) -> Iterator[tuple[str, int]]:
        labels = self.live_labels()
        return zip(self.ids_of(labels), labels.tolist())

    @property
    def slots(self) -> int:
        """The size of the label space: every label in use is below it."""
        return self._slots

    @property
    def free_count(self) -> int:
        return len(self._free)

    def label_of(self, point_id: str) -> int | None:
        label = self._recent.get(point_id)
        if label is not None:
            return label
        return self._find_sorted(point_id, hash(point_id))

    def labels_of(self, ids: Sequence[str]) -> np.ndarray:
        """The label of each id, -1 where it is absent. Vectorised up to the hash match: only ids whose hash
        is in the sorted columns have their bytes compared, so new ids (a bulk load) cost a hash each."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not ids:
            return out
        if len(self._sorted_hashes):
            hashes = np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids))
            starts = np.searchsorted(self._sorted_hashes, hashes)
            clipped = np.minimum(starts, len(self._sorted_hashes) - 1)
            for row in np.flatnonzero(self._sorted_hashes[clipped] == hashes).tolist():
                label = self._find_sorted(ids[row], int(hashes[row]), start=int(starts[row]))
                if label is not None:
                    out[row] = label
        if self._recent:
            recent = self._recent
            for row, point_id in enumerate(ids):
                label = recent.get(point_id)
                if label is not None:
                    out[row] = label
        return out

    def id_of(self, label: int) -> str | None:
        if label < 0 or label >= self._slots or self._lengths[label] == 0:
            return None
        return self._decode(label)

    def ids_of(self, labels: Sequence[int] | np.ndarray) -> list[str]:
        """The ids of labels known to be live (search results): no checks. One gather of offsets and lengths,
        then a slice of the buffer per id: about a third of decoding them one at a time."""
        picked = np.asarray(labels, dtype=np.int64)
        offsets, lengths = self._offsets[picked].tolist(), self._lengths[picked].tolist()
        view = self._buffer.data
        return [str(view[offset : offset + length], "utf-8") for offset, length in zip(offsets, lengths)]

    def id_bytes_of(self, labels: np.ndarray) -> tuple[np.ndarray, bytes]:
        """The ids of labels known to be live, undecoded: each one's length and their UTF-8 back to back,
        gathered in one take (what a packed search answer carries), with no string made per id."""
        picked = np.asarray(labels, dtype=np.int64)
        lengths = self._lengths[picked].astype(np.int64)
        return lengths, gather_bytes(self._buffer, self._offsets[picked].astype(np.int64), lengths)

    def is_live(self, label: int) -> bool:
        return 0 <= label < self._slots and bool(self._lengths[label] > 0)

    def live_labels(self, after: int = -1, limit: int | None = None) -> np.ndarray:
        """The live labels above `after`, ascending: all of them, or the first `limit` (scanned a window at
        a time, so paging through a large map costs what it returns)."""
        start = max(after + 1, 0)
        if limit is None:
            return start + np.flatnonzero(self._lengths[start : self._slots] > 0)
        found: list[np.ndarray] = []
        wanted = limit
        window = max(4 * limit, 65536)
        while wanted > 0 and start < self._slots:
            stop = min(start + window, self._slots)
            part = start + np.flatnonzero(self._lengths[start:stop] > 0)[:wanted]
            found.append(part)
            wanted -= len(part)
            start = stop
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def memory_bytes(self) -> int:
        """Resident bytes: the zero-filled columns' spare capacity is never written, so it is not counted."""
        columns = self._used + self._slots * (self._offsets.itemsize + self._lengths.itemsize)
        columns += self._sorted_hashes.nbytes + self._sorted_labels.nbytes
        return columns + 8 * len(self._free) + 140 * len(self._recent)  # ~140 B a dict entry with its str

    # -- writes -------------------------------------------------------------------------------------

    def assign(self, ids: Sequence[str]) -> np.ndarray:
        """The label of each id: its own where present, else a new one (a free label, lowest first)."""
        labels = self.labels_of(ids)
        for row in np.flatnonzero(labels < 0).tolist():
            point_id = ids[row]
            label = self._recent.get(point_id)  # a repeat of an id new in this very batch
            if label is None:
                label = self._new_label()
                self._write(label, point_id)
                self._recent[point_id] = label
                self._count += 1
            labels[row] = label
        self._maybe_merge()
        return labels

    def remove(self, ids: Iterable[str]) -> list[int]:
        """Free the labels of the ids present; returns them (each once)."""
        freed: list[int] = []
        for point_id in ids:
            label = self._recent.pop(point_id, None)
            if label is None:
                label = self._find_sorted(point_id, hash(point_id), unmark=True)
                if label is None:
                    continue
            self._dead += int(self._lengths[label])
            self._lengths[label] = 0
            heapq.heappush(self._free, label)
            self._count -= 1
            freed.append(label)
        if self._dead > max(self._used - self._dead, 2**20):
            self._compact()
        return freed

    # -- snapshots ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The ids by label (no hashes: those are per process), compacted into new arrays: this runs under
        the partition's read lock, beside searches reading the map, so it must change nothing."""
        buffer, offsets = self._compacted()
        lengths = self._lengths[: self._slots].astype(np.int32)
        lengths[lengths == 0] = -1  # the snapshot format's free label
        out = io.BytesIO()
        np.savez(out, format=np.array([_FORMAT]), buffer=buffer, offsets=offsets, lengths=lengths)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "IdMap":
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        if int(arrays["format"][0]) != _FORMAT:
            raise ValueError(f"id map format {int(arrays['format'][0])} is newer than this server reads ({_FORMAT})")
        id_map = cls()
        buffer, offsets, lengths = arrays["buffer"], arrays["offsets"], arrays["lengths"]
        id_map._buffer = np.concatenate([buffer, np.zeros(max(len(buffer), 16 * _MIN_CAPACITY), dtype=np.uint8)])
        id_map._used = len(buffer)
        if len(buffer) > _NARROW_OFFSET_LIMIT:
            id_map._offsets = id_map._offsets.astype(np.int64)
        id_map._grow_labels(len(offsets))
        id_map._offsets[: len(offsets)] = offsets
        id_map._lengths[: len(lengths)] = np.maximum(lengths, 0)
        id_map._slots = len(offsets)
        id_map._free = np.flatnonzero(lengths < 0).tolist()  # ascending: already a heap
        id_map._count = int(np.count_nonzero(lengths >= 0))
        id_map._rebuild_sorted()
        return id_map

    @classmethod
    def from_list(cls, label_ids: Sequence[str | None]) -> "IdMap":
        """From the label -> id list older snapshots hold (None: a free label)."""
        id_map = cls()
        id_map._grow_labels(len(label_ids))
        for label, point_id in enumerate(label_ids):
            if point_id is not None:
                id_map._write(label, point_id)
                id_map._count += 1
        id_map._slots = len(label_ids)
        id_map._free = [label for label, point_id in enumerate(label_ids) if point_id is None]
        id_map._rebuild_sorted()
        return id_map

    # -- internals ----------------------------------------------------------------------------------

    def _decode(self, label: int) -> str:
        offset = int(self._offsets[label])
        return self._buffer[offset : offset + int(self._lengths[label])].tobytes().decode("utf-8")

    def _find_sorted(self, point_id: str, h: int, unmark: bool = False, start: int | None = None) -> int | None:
        position = int(np.searchsorted(self._sorted_hashes, h)) if start is None else start
        while position < len(self._sorted_hashes) and self._sorted_hashes[position] == h:
            label = int(self._sorted_labels[position])
            if label >= 0 and self._decode(label) == point_id:
                if unmark:
                    self._sorted_labels[position] = -1
                return label
            position += 1
        return None

    def _new_label(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if self._slots >= _MAX_LABELS:
            raise OverflowError(f"a partition holds at most {_MAX_LABELS:,} points")
        label = self._slots
        self._slots += 1
        self._grow_labels(self._slots)
        return label

    def _grow_labels(self, needed: int) -> None:
        if needed <= len(self._offsets):
            return
        size = max(needed, 2 * len(self._offsets))  # doubling: the unwritten zeros are not resident
        offsets = np.zeros(size, dtype=self._offsets.dtype)
        lengths = np.zeros(size, dtype=self._lengths.dtype)
        offsets[: len(self._offsets)] = self._offsets
        lengths[: len(self._lengths)] = self._lengths
        self._offsets, self._lengths = offsets, lengths

    def _write(self, label: int, point_id: str) -> None:
        data = point_id.encode("utf-8")
        if not 0 < len(data) <= _MAX_ID_BYTES:
            raise ValueError(f"a point id must be 1..{_MAX_ID_BYTES} bytes of UTF-8, got {len(data)}")
        end = self._used + len(data)
        if end > len(self._buffer):
            grown = np.zeros(max(end, 2 * len(self._buffer)), dtype=np.uint8)
            grown[: self._used] = self._buffer[: self._used]
            self._buffer = grown
        if end > _NARROW_OFFSET_LIMIT and self._offsets.dtype != np.int64:
            self._offsets = self._offsets.astype(np.int64)
        self._buffer[self._used : end] = np.frombuffer(data, dtype=np.uint8)
        self._offsets[label] = self._used
        self._lengths[label] = len(data)
        self._used = end

    def _maybe_merge(self) -> None:
        if len(self._recent) <= max(_MIN_RECENT, min(_MAX_RECENT, len(self._sorted_hashes) // 8)):
            return
        recent_hashes = np.fromiter((hash(i) for i in self._recent), dtype=np.int64, count=len(self._recent))
        recent_labels = np.fromiter(self._recent.values(), dtype=np.int32, count=len(self._recent))
        order = np.argsort(recent_hashes, kind="stable")
        recent_hashes, recent_labels = recent_hashes[order], recent_labels[order]
        hashes, labels = self._sorted_hashes, self._sorted_labels
        if np.any(labels < 0):  # removed entries, dropped now
            kept = labels >= 0
            hashes, labels = hashes[kept], labels[kept]
        # One pass: each new entry goes in after the equal hashes already there, so the columns stay sorted.
        at = np.searchsorted(hashes, recent_hashes, side="right")
        self._sorted_hashes = np.insert(hashes, at, recent_hashes)
        self._sorted_labels = np.insert(labels, at, recent_labels)
        self._recent = {}

    def _rebuild_sorted(self) -> None:
        labels = self.live_labels()
        hashes = np.fromiter((hash(self._decode(label)) for label in labels.tolist()), dtype=np.int64, count=len(labels))
        order = np.argsort(hashes, kind="stable")
        self._sorted_hashes, self._sorted_labels = hashes[order], labels[order].astype(np.int32)
        self._recent = {}

    def _compacted(self) -> tuple[np.ndarray, np.ndarray]:
        """The live ids' bytes in label order, and each label's offset into them (0 for free labels): new
        arrays, nothing here is changed."""
        labels = self.live_labels()
        lengths = self._lengths[labels].astype(np.int64)
        new_offsets = np.cumsum(lengths) - lengths
        # One gather: every live byte's source position, in the new order.
        buffer = self._buffer[gather_index(self._offsets[labels].astype(np.int64), lengths)]
        offsets = np.zeros(self._slots, dtype=np.int64)
        offsets[labels] = new_offsets
        return buffer, offsets

    def _compact(self) -> None:
        """Rewrite the buffer with the live ids only, in label order (under the writers' lock only)."""
        if self._dead == 0:
            return
        live, offsets = self._compacted()
        buffer = np.zeros(max(2 * len(live), 16 * _MIN_CAPACITY), dtype=np.uint8)
        buffer[: len(live)] = live
        self._offsets[: self._slots] = offsets
        self._buffer, self._used, self._dead = buffer, len(live), 0
