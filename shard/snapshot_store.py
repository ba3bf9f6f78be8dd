"""Checksummed, atomically written snapshot files: the shard's state as of one WAL LSN.

A file `snapshot-{lsn:020d}.qsnap` is the magic `QSNAP1\\n`, a little-endian u32 header length, a JSON
header (version, lsn, written_unix, and each section's name, length and crc32), the section bodies in header
order, and a sha256 of everything before it. It is written to a `.tmp` file, fsynced, renamed into place and
the directory fsynced, so a crash leaves either the old set of snapshots or the new one.

Loading tries the newest first; a snapshot that fails any check is renamed `.corrupt` (never served again,
kept for an operator) and the next older one is tried. That is why `keep` defaults to 2: with the WAL kept
back to the oldest kept snapshot, losing the newest one still recovers everything.

Not thread-safe: one writer per directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shard.storage import OS_STORAGE, Storage

_log = logging.getLogger(__name__)

_MAGIC = b"QSNAP1\n"
_HEADER_LEN = struct.Struct("<I")
_DIGEST_BYTES = hashlib.sha256().digest_size
_NAME = re.compile(r"snapshot-(\d{20})\.qsnap")
# Big sections are hashed and written in pieces that stay in cache between the two passes.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedSnapshot:
    lsn: int
    sections: dict[str, bytes]
    path: Path
    written_unix: float


class _Invalid(Exception):
    """The file fails a check; the message says which."""



class SnapshotStore:
    def __init__(self, directory: Path, keep: int = 2, *, storage: Storage = OS_STORAGE) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._storage = storage
        self._dir = directory
        self._keep = keep
        storage.make_dirs(directory)

    def write(self, lsn: int, sections: Mapping[str, bytes]) -> Path:
        """Durably write a snapshot at `lsn`, prune old ones beyond `keep`, and return its path.

        Section values may be any C-contiguous buffer (bytes, bytearray, numpy arrays); none is copied.
        """
        views = {name: memoryview(body).cast("B") for name, body in sections.items()}
        header = json.dumps({
            "version": 1,
            "lsn": lsn,
            "written_unix": time.time(),
            "sections": [{"name": n, "length": v.nbytes, "crc32": zlib.crc32(v)} for n, v in views.items()],
        }).encode()
        path = self._dir / f"snapshot-{lsn:020d}.qsnap"
        tmp = path.with_name(path.name + ".tmp")
        digest = hashlib.sha256()
        try:
            f = self._storage.create(tmp)
            try:
                def put(data: bytes | memoryview) -> None:
                    digest.update(data)
                    f.write(data)

                # The small header pieces go out as one write; the bodies in chunks, uncopied.
                put(b"".join((_MAGIC, _HEADER_LEN.pack(len(header)), header)))
                for view in views.values():
                    for start in range(0, view.nbytes, _CHUNK):
                        put(view[start:start + _CHUNK])
                f.write(digest.digest())
                f.fsync()
            finally:
                f.close()
            self._storage.replace(tmp, path)
        except BaseException:
            self._storage.unlink(tmp, missing_ok=True)
            raise
        self._storage.fsync_dir(self._dir)
        self._prune()
        return path

    def load_newest_valid(self) -> LoadedSnapshot | None:
        """Return the newest snapshot that passes every check, setting aside the ones that do not."""
        for name in self._storage.list_dir(self._dir):
            if name.startswith("snapshot-") and name.endswith(".qsnap.tmp"):
                self._storage.unlink(self._dir / name)  # a write that crashed before its rename
        for lsn in reversed(self.kept_lsns()):
            path = self._path(lsn)
            try:
                return _read(self._storage, path, lsn)
            except _Invalid as err:
                _log.warning("snapshot %s is corrupt (%s); setting it aside and trying an older one",
                             path, err)
                self._storage.replace(path, path.with_name(path.name + ".corrupt"))
                self._storage.fsync_dir(self._dir)
        return None

    def discard_after(self, lsn: int) -> list[int]:
        """Delete the snapshots taken after `lsn` (they hold records being reconciled away); their LSNs."""
        gone = [kept for kept in self.kept_lsns() if kept > lsn]
        for kept in gone:
            self._storage.unlink(self._path(kept))
        if gone:
            self._storage.fsync_dir(self._dir)
        return gone

    def path_of(self, lsn: int) -> Path:
        return self._path(lsn)

    def kept_lsns(self) -> list[int]:
        """LSNs of the snapshot files present, ascending (judged by name, not yet verified)."""
        matches = (_NAME.fullmatch(name) for name in self._storage.list_dir(self._dir))
        return sorted(int(m.group(1)) for m in matches if m)

    def _path(self, lsn: int) -> Path:
        return self._dir / f"snapshot-{lsn:020d}.qsnap"

    def _prune(self) -> None:
        old = self.kept_lsns()[:-self._keep]
        for lsn in old:
            self._storage.unlink(self._path(lsn))
        if old:
            self._storage.fsync_dir(self._dir)


class InvalidSnapshot(Exception):
    """A snapshot file (e.g. one received from a peer) fails a check; the message says which."""


def verify_snapshot_file(path: Path, lsn: int, storage: Storage = OS_STORAGE) -> None:
    """Every check a load makes (magic, header, sizes, each section's crc32, the sha256 trailer), without
    keeping the sections; InvalidSnapshot naming the first that fails."""
    try:
        _read(storage, path, lsn)
    except _Invalid as error:
        raise InvalidSnapshot(f"{path.name}: {error}") from None


def _read(storage: Storage, path: Path, lsn: int) -> LoadedSnapshot:
    """Read and verify one snapshot file, raising _Invalid on any mismatch."""
    size = storage.size(path)
    digest = hashlib.sha256()
    with storage.open_read(path) as f:
        def take(n: int) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise _Invalid("file is truncated")
            digest.update(data)
            return data

        if take(len(_MAGIC)) != _MAGIC:
            raise _Invalid("bad magic")
        (header_len,) = _HEADER_LEN.unpack(take(_HEADER_LEN.size))
        if header_len > size:
            raise _Invalid(f"header length {header_len} exceeds file size {size}")
        header = _parse_header(take(header_len), lsn)
        lengths = [s["length"] for s in header["sections"]]
        expected_size = len(_MAGIC) + _HEADER_LEN.size + header_len + sum(lengths) + _DIGEST_BYTES
        # Checked before reading the bodies so a damaged length cannot make us allocate gigabytes.
        if size != expected_size:
            raise _Invalid(f"file is {size} bytes, header implies {expected_size}")
        sections = {}
        for entry in header["sections"]:
            body = take(entry["length"])
            if zlib.crc32(body) != entry["crc32"]:
                raise _Invalid(f"crc mismatch in section {entry['name']!r}")
            sections[entry["name"]] = body
        if f.read(_DIGEST_BYTES) != digest.digest():
            raise _Invalid("sha256 trailer mismatch")
    return LoadedSnapshot(lsn, sections, path, float(header["written_unix"]))


def _parse_header(raw: bytes, lsn: int) -> dict:
    try:
        header = json.loads(raw)
        sections = header["sections"]
        valid = (
            header["version"] == 1
            and header["lsn"] == lsn
            and isinstance(header["written_unix"], (int, float))
            and all(isinstance(s["name"], str) and isinstance(s["length"], int) and s["length"] >= 0
                    and isinstance(s["crc32"], int) for s in sections)
            and len({s["name"] for s in sections}) == len(sections)
        )
    except (ValueError, KeyError, TypeError) as err:  # UnicodeDecodeError is a ValueError
        raise _Invalid(f"unreadable header: {err}") from None
    if not valid:
        raise _Invalid("header fields are missing, mistyped or disagree with the file name")
    return header
