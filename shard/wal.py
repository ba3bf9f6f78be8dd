"""A segmented write-ahead log of opaque byte payloads: the shard's durability for writes since the last
snapshot.

Every record gets a log sequence number (LSN): consecutive integers from 1, global across segment files
named `wal-{first_lsn:020d}.log`. A record is a `<IIQ` header (payload length, crc32 over the 8 LSN bytes
and the payload, LSN) followed by the payload. `append_batch` writes a whole batch and fsyncs once, so
concurrent writers that the caller groups into one batch share one fsync (group commit).

Recovery policy, decided at `open`: a segment is only ever written after its predecessor's last batch was
fsynced, so a crash can only tear the tail of the *last* segment. A bad record there (short, past end of
file, crc mismatch, wrong LSN) is taken to be that tear: the file is cut at the record's start and opening
goes on. A bad record in any earlier segment, or an LSN gap between segments, is real damage and raises
`CorruptLog`. Corruption in the middle of the last segment cannot be told apart from a tear, so it also
loses the records after it; the snapshot store keeps an older snapshot for that reason.

After a failed write or fsync (disk full, I/O error) the log refuses appends: the kernel may have dropped
the dirty pages while reporting the error once, so a second fsync proves nothing about them. `recover`
cuts the active segment back to its size after its last successful fsync, durably, and appends resume
after that; the failed batch's records are gone, as its callers were told they might be.

Not thread-safe: the caller drives it from one worker thread at a time.
"""
from __future__ import annotations

import logging
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from quiver.metrics import WAL_FSYNC_SECONDS
from shard.storage import OS_STORAGE, Storage, WritableFile

_log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQ")
_LSN = struct.Struct("<Q")
_SEGMENT_NAME = re.compile(r"wal-(\d{20})\.log")
_MAX_PAYLOAD = 2**32 - 1


class CorruptLog(Exception):
    """The log is damaged somewhere a crash cannot explain; recovering from it needs an operator."""


class LogFailed(RuntimeError):
    """An append or roll failed, so what the active segment holds past its last fsync is unknown; the log
    takes nothing more until `recover` cuts that uncertain tail off."""


class _BadRecord(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.offset = offset


@dataclass
class _Segment:
    path: Path
    first_lsn: int
    size: int


def _segment_path(directory: Path, first_lsn: int) -> Path:
    return directory / f"wal-{first_lsn:020d}.log"


def _crc(lsn: int, payload: bytes) -> int:
    # The LSN is covered too, so a record copied to the wrong place does not pass as valid.
    return zlib.crc32(payload, zlib.crc32(_LSN.pack(lsn)))


def _encode(lsn: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), _crc(lsn, payload), lsn) + payload


def _records(f: BinaryIO, first_lsn: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, lsn, payload) for the records in f[:end]; raise _BadRecord at the first bad one."""
    offset, lsn = 0, first_lsn
    while offset < end:
        if offset + _HEADER.size > end:
            raise _BadRecord(offset, "truncated header")
        length, crc, rec_lsn = _HEADER.unpack(f.read(_HEADER.size))
        # Checked before reading so a garbage length cannot make us allocate gigabytes.
        if offset + _HEADER.size + length > end:
            raise _BadRecord(offset, f"payload length {length} runs past end of file")
        if rec_lsn != lsn:
            raise _BadRecord(offset, f"lsn {rec_lsn} where {lsn} was expected")
        payload = f.read(length)
        if _crc(rec_lsn, payload) != crc:
            raise _BadRecord(offset, "crc mismatch")
        yield offset, lsn, payload
        offset += _HEADER.size + length
        lsn += 1



class WriteAheadLog:
    """Append-only log; use `open`, not the constructor."""

    def __init__(self, storage: Storage, directory: Path, segment_bytes: int, segments: list[_Segment], last_lsn: int) -> None:
        self._storage = storage
        self._dir = directory
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._last_lsn = last_lsn
        self._file: WritableFile | None = storage.open_append(segments[-1].path)
        self._failed: str | None = None  # why appends stopped, until `recover`

    @classmethod
    def open(
        cls, directory: Path, segment_bytes: int = 64 * 2**20, start_lsn: int = 0, *, storage: Storage = OS_STORAGE
    ) -> WriteAheadLog:
        """Open (or create) the log in `directory`, cutting off a torn tail left by a crash.

        `start_lsn` is the LSN of the snapshot the caller recovered from: with no segments, the first record
        gets `start_lsn + 1`.
        """
        storage.make_dirs(directory)
        segments = cls._scan(storage, directory)
        last_lsn = cls._validate(storage, segments) if segments else start_lsn
        if segments and start_lsn > last_lsn:
            # The snapshot already holds everything these segments have, and keeping them would leave an
            # LSN gap that the next open must treat as corruption.
            _log.warning("snapshot lsn %d is past the log's last lsn %d: dropping %d old segment(s)",
                         start_lsn, last_lsn, len(segments))
            for seg in segments:
                storage.unlink(seg.path)
            segments, last_lsn = [], start_lsn
        if not segments:
            segments = [cls._create_segment(storage, directory, last_lsn + 1)]
        return cls(storage, directory, segment_bytes, segments, last_lsn)

    @classmethod
    def truncate_after(cls, directory: Path, lsn: int, *, storage: Storage = OS_STORAGE) -> int:
        """Cut a closed log back so that `lsn` is its last record (a replica reconciling a tail that its new
        primary does not have); returns how many records were removed. Durable before it returns."""
        removed = 0
        for seg in reversed(cls._scan(storage, directory)):
            if seg.first_lsn > lsn:
                with storage.open_read(seg.path) as f:
                    removed += sum(1 for _ in _records(f, seg.first_lsn, seg.size))
                storage.unlink(seg.path)
                continue
            with storage.open_read(seg.path) as f:
                cut = None
                for offset, record_lsn, _ in _records(f, seg.first_lsn, seg.size):
                    if record_lsn == lsn + 1:
                        cut = offset
                    if record_lsn > lsn:
                        removed += 1
            if cut is not None:
                storage.truncate(seg.path, cut)
            break
        storage.fsync_dir(directory)
        return removed

    @staticmethod
    def _scan(storage: Storage, directory: Path) -> list[_Segment]:
        found = []
        for name in storage.list_dir(directory):
            match = _SEGMENT_NAME.fullmatch(name)
            if match:
                path = directory / name
                found.append(_Segment(path, int(match.group(1)), storage.size(path)))
        return sorted(found, key=lambda s: s.first_lsn)

    @staticmethod
    def _validate(storage: Storage, segments: list[_Segment]) -> int:
        """Check every record, truncate a torn tail of the last segment, and return the last good LSN."""
        expected = segments[0].first_lsn
        for i, seg in enumerate(segments):
            if seg.first_lsn != expected:
                raise CorruptLog(f"{seg.path}: starts at lsn {seg.first_lsn}, expected {expected} (offset 0)")
            with storage.open_read(seg.path) as f:
                try:
                    for _offset, lsn, _payload in _records(f, seg.first_lsn, seg.size):
                        expected = lsn + 1
                except _BadRecord as bad:
                    if i < len(segments) - 1:
                        raise CorruptLog(f"{seg.path}: {bad}") from None
                    _log.warning("%s: dropping torn tail (%s, %d bytes)",
                                 seg.path, bad, seg.size - bad.offset)
                    storage.truncate(seg.path, bad.offset)
                    seg.size = bad.offset
        return expected - 1

    @staticmethod
    def _create_segment(storage: Storage, directory: Path, first_lsn: int) -> _Segment:
        path = _segment_path(directory, first_lsn)
        storage.create(path, exclusive=True).close()
        storage.fsync_dir(directory)
        return _Segment(path, first_lsn, 0)

    @property
    def last_lsn(self) -> int:
        """LSN of the last durable record; 0 (or the start LSN) when there is none."""
        return self._last_lsn

    @property
    def first_lsn(self) -> int:
        """The LSN of the oldest record the log still holds (or of the next record, when it holds none)."""
        return self._segments[0].first_lsn

    @property
    def size_bytes(self) -> int:
        return sum(seg.size for seg in self._segments)

    def append_batch(self, payloads: list[bytes]) -> list[int]:
        """Write `payloads` as consecutive records, fsync once, and return their LSNs."""
        self._check_writable()
        if not payloads:
            return []
        if any(len(p) > _MAX_PAYLOAD for p in payloads):
            raise ValueError("a WAL payload must be under 4 GiB")
        first = self._last_lsn + 1
        data = b"".join(_encode(first + i, p) for i, p in enumerate(payloads))
        active = self._segments[-1]
        # Roll before the batch so that a record, and a batch, never spans two files.
        if active.size > 0 and active.size + len(data) > self._segment_bytes:
            self._roll()
            active = self._segments[-1]
        assert self._file is not None
        try:
            self._file.write(data)
            synced = time.perf_counter()
            self._file.fsync()
            WAL_FSYNC_SECONDS.observe(time.perf_counter() - synced)
        except OSError as error:
            # After a failed write or fsync the kernel may have dropped dirty pages, so what is on disk is
            # unknown; refuse further appends until `recover` cuts the tail back to what was synced.
            self._failed = f"{active.path}: {error.strerror or error}"
            raise
        active.size += len(data)
        self._last_lsn = first + len(payloads) - 1
        return list(range(first, self._last_lsn + 1))

    def replay(self, after_lsn: int) -> Iterator[tuple[int, bytes]]:
        """Yield (lsn, payload) for every record with lsn > after_lsn, in LSN order."""
        # Bound each file by the size known now, so a concurrent append is never read half written.
        segments = [_Segment(s.path, s.first_lsn, s.size) for s in self._segments]
        for i, seg in enumerate(segments):
            if i + 1 < len(segments) and segments[i + 1].first_lsn <= after_lsn + 1:
                continue  # every record in it is <= after_lsn
            with self._storage.open_read(seg.path) as f:
                try:
                    for _, lsn, payload in _records(f, seg.first_lsn, seg.size):
                        if lsn > after_lsn:
                            yield lsn, payload
                except _BadRecord as bad:
                    raise CorruptLog(f"{seg.path}: {bad}") from None

    def rotate(self) -> int:
        """Start a new segment (unless the active one is empty) and return the next LSN to be written."""
        self._check_writable()
        if self._segments[-1].size > 0:
            self._roll()
        return self._last_lsn + 1

    def drop_segments_before(self, lsn: int) -> int:
        """Delete the segments holding only records below `lsn`; return how many files were removed."""
        keep_from = 0
        # The active (last) segment is never dropped, hence the -1.
        while keep_from < len(self._segments) - 1 and self._segments[keep_from + 1].first_lsn <= lsn:
            keep_from += 1
        for seg in self._segments[:keep_from]:
            self._storage.unlink(seg.path)
        del self._segments[:keep_from]
        if keep_from:
            self._storage.fsync_dir(self._dir)
        return keep_from

    @property
    def failure(self) -> str | None:
        """Why appends are refused (a failed append or roll), or None while the log takes writes."""
        return self._failed

    def recover(self) -> None:
        """Make a failed log writable again: drop the active segment's bytes past its last fsync and a
        segment file a failed roll left behind, each durably. Raises OSError (and stays failed) when the
        disk refuses that too."""
        if self._failed is None:
            return
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # its error was already reported by the failed call
            self._file = None
        active = self._segments[-1]
        stray = _segment_path(self._dir, self._last_lsn + 1)
        if stray != active.path and self._storage.exists(stray):
            self._storage.unlink(stray)
            self._storage.fsync_dir(self._dir)
        self._storage.truncate(active.path, active.size)
        self._file = self._storage.open_append(active.path)
        _log.warning("write-ahead log %s recovered after: %s", self._dir, self._failed)
        self._failed = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self) -> None:
        # A failed log must not roll either: its torn tail would end up in a non-last segment.
        if self._failed is not None:
            raise LogFailed(f"write-ahead log stopped taking writes after an error ({self._failed})")
        if self._file is None:
            raise RuntimeError("write-ahead log is closed")

    def _roll(self) -> None:
        assert self._file is not None
        try:
            self._file.close()
            self._file = None
            self._segments.append(self._create_segment(self._storage, self._dir, self._last_lsn + 1))
            self._file = self._storage.open_append(self._segments[-1].path)
        except OSError as error:
            self._failed = f"{self._dir}: starting a new segment: {error.strerror or error}"
            raise
