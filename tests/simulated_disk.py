"""An in-memory disk behind the shard's `Storage` interface that fails on demand and loses power.

It keeps two views of everything, the way a kernel with a page cache does: what reads see now, and
what would survive a power cut. File data becomes durable at `fsync` of that file; a name (created,
renamed, deleted) becomes durable at `fsync_dir` of its directory. `power_loss()` returns a new disk
holding only the durable view, and with an `rng` it also tears the unsynced tail of appended files: a
random prefix of the bytes written since the last fsync survives, its last sector sometimes garbled
(what a crash in the middle of a write leaves). That is the contract the WAL and snapshots are built
against, with nothing kind added: unlike SIGKILL, a missing fsync loses data here.

Space: with `capacity` set (bytes, over every file's contents), a write that would pass it raises ENOSPC
and writes nothing, and `free_bytes` reports what is left; raise or clear it to free space.

Faults: `fail(kind, ...)` makes matching operations raise OSError (EIO, ENOSPC, ...) a number of times;
`crash_after(n)` cuts the power at the n-th mutating operation: that one and every later operation
raise `PowerLost`, and the disk's durable view is frozen as it was. Safe to call from several threads.
"""
from __future__ import annotations

import errno
import io
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SECTOR = 512


class PowerLost(OSError):
    def __init__(self) -> None:
        super().__init__(errno.EIO, "simulated power loss")


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""


@dataclass
class _Fault:
    kind: str
    path_part: str
    error: int
    times: int


class _File:
    def __init__(self, disk: "SimulatedDisk", path: Path, inode: _Inode) -> None:
        self._disk, self._path, self._inode = disk, path, inode

    def write(self, data: bytes | memoryview) -> None:
        # The bytes reach the page cache even when the power goes during the call: power_loss() decides
        # how much of what was never fsynced survives.
        def write() -> None:
            self._disk._check_space(len(memoryview(data).cast("B")), self._path)
            self._inode.data.extend(data)

        self._disk._op("write", self._path, write, apply_on_crash=True)

    def fsync(self) -> None:
        self._disk._op("fsync", self._path, lambda: setattr(self._inode, "synced", bytes(self._inode.data)))

    def close(self) -> None:
        pass


class SimulatedDisk:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._files: dict[Path, _Inode] = {}
        self._dirs: set[Path] = {Path("/")}
        self._durable_files: dict[Path, _Inode] = {}
        self._durable_dirs: set[Path] = {Path("/")}
        self._faults: list[_Fault] = []
        self._crash_at: int | None = None
        self.crashed = False
        self.mutations = 0
        self.counts: Counter[str] = Counter()
        self.capacity: int | None = None

    # -- fault control --------------------------------------------------------------------------------

    def fail(self, kind: str, path_part: str = "", error: int = errno.EIO, times: int = 1) -> None:
        """The next `times` operations of `kind` on a path containing `path_part` raise OSError(error)."""
        with self._lock:
            self._faults.append(_Fault(kind, path_part, error, times))

    def crash_after(self, mutations: int) -> None:
        """Cut the power at the `mutations`-th mutating operation from now (1 = the next one)."""
        with self._lock:
            self._crash_at = self.mutations + mutations

    def power_loss(self, rng: random.Random | None = None) -> "SimulatedDisk":
        """A disk as it comes back after a power cut now: the durable view, unsynced tails torn by `rng`."""
        with self._lock:
            after = SimulatedDisk()
            after._dirs = set(self._durable_dirs)
            copies: dict[int, _Inode] = {}
            for path, inode in self._durable_files.items():
                if not all(d in self._durable_dirs for d in path.parents):
                    continue  # its directory's own entry was never made durable
                if id(inode) not in copies:
                    copies[id(inode)] = _Inode(bytearray(_surviving_bytes(inode, rng)))
                    copies[id(inode)].synced = bytes(copies[id(inode)].data)
                after._files[path] = copies[id(inode)]
            after._durable_files = dict(after._files)
            after._durable_dirs = set(after._dirs)
            return after

    # -- Storage ------------------------------------------------------------------------------------

    def make_dirs(self, path: Path) -> None:
        missing = []
        with self._lock:
            while path not in self._dirs:
                missing.append(path)
                path = path.parent
        for directory in reversed(missing):
            self._op("mkdir", directory, lambda d=directory: self._dirs.add(d))
            self.fsync_dir(directory.parent)

    def list_dir(self, path: Path) -> list[str]:
        with self._lock:
            self._read_op(path)
            if path not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", str(path))
            return sorted({p.name for p in (*self._files, *self._dirs) if p.parent == path and p != path})

    def exists(self, path: Path) -> bool:
        with self._lock:
            self._read_op(path)
            return path in self._files or path in self._dirs

    def size(self, path: Path) -> int:
        with self._lock:
            self._read_op(path)
            return len(self._inode(path).data)

    def open_read(self, path: Path) -> BinaryIO:
        with self._lock:
            self._read_op(path)
            return io.BytesIO(bytes(self._inode(path).data))

    def create(self, path: Path, *, exclusive: bool = False) -> _File:
        def create() -> None:
            if path.parent not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", str(path.parent))
            if path in self._files:
                if exclusive:
                    raise FileExistsError(errno.EEXIST, "file exists", str(path))
                del self._files[path].data[:]  # O_TRUNC: same inode, contents gone (until fsync, only in cache)
            else:
                self._files[path] = _Inode()

        self._op("create", path, create)
        return _File(self, path, self._files[path])

    def open_append(self, path: Path) -> _File:
        with self._lock:
            self._read_op(path)
            return _File(self, path, self._inode(path))

    def truncate(self, path: Path, size: int) -> None:
        def truncate() -> None:
            inode = self._inode(path)
            del inode.data[size:]
            inode.synced = bytes(inode.data)

        self._op("truncate", path, truncate)

    def replace(self, source: Path, target: Path) -> None:
        def replace() -> None:
            self._files[target] = self._inode(source)
            del self._files[source]

        self._op("rename", source, replace)

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        def unlink() -> None:
            if path in self._files:
                del self._files[path]
            elif not missing_ok:
                raise FileNotFoundError(errno.ENOENT, "no such file", str(path))

        self._op("unlink", path, unlink)

    def fsync_dir(self, path: Path) -> None:
        def sync() -> None:
            if path not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", str(path))
            self._durable_files = {p: i for p, i in self._durable_files.items() if p.parent != path}
            self._durable_files.update({p: i for p, i in self._files.items() if p.parent == path})
            self._durable_dirs = {d for d in self._durable_dirs if d.parent != path or d == path}
            self._durable_dirs.update(d for d in self._dirs if d.parent == path)

        self._op("fsync_dir", path, sync)

    def remove_tree(self, path: Path) -> None:
        def remove() -> None:
            for p in [p for p in self._files if path in p.parents]:
                del self._files[p]
            self._dirs = {d for d in self._dirs if d != path and path not in d.parents}

        self._op("remove_tree", path, remove)

    def free_bytes(self, path: Path) -> int:
        with self._lock:
            self._read_op(path)
            if self.capacity is None:
                return 2**62
            return max(0, self.capacity - self._used_bytes())

    # -- inspection ---------------------------------------------------------------------------------

    def files(self) -> dict[Path, int]:
        """Every file now visible, with its size."""
        with self._lock:
            return {p: len(i.data) for p, i in self._files.items()}

    # -- internals ----------------------------------------------------------------------------------

    def _inode(self, path: Path) -> _Inode:
        try:
            return self._files[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None

    def _used_bytes(self) -> int:
        return sum(len(inode.data) for inode in {id(i): i for i in self._files.values()}.values())

    def _check_space(self, size: int, path: Path) -> None:
        if self.capacity is not None and self._used_bytes() + size > self.capacity:
            raise OSError(errno.ENOSPC, "no space left on device (simulated)", str(path))

    def _read_op(self, path: Path) -> None:
        if self.crashed:
            raise PowerLost()
        self._injected("read", path)

    def _injected(self, kind: str, path: Path) -> None:
        for fault in self._faults:
            if fault.times > 0 and fault.kind == kind and fault.path_part in str(path):
                fault.times -= 1
                raise OSError(fault.error, f"injected {errno.errorcode.get(fault.error, fault.error)} on {kind}", str(path))

    def _op(self, kind: str, path: Path, apply, *, apply_on_crash: bool = False) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if self.crashed:
                raise PowerLost()
            self.mutations += 1
            if self._crash_at is not None and self.mutations >= self._crash_at:
                if apply_on_crash:
                    try:
                        apply()
                    except OSError:
                        pass  # a full disk took none of it; the power cut is what the caller sees
                self.crashed = True
                raise PowerLost()
            self._injected(kind, path)
            apply()
            self.counts[kind] += 1


def _surviving_bytes(inode: _Inode, rng: random.Random | None) -> bytes:
    """What a file holds after a power cut: its synced contents, plus a torn piece of an unsynced append."""
    data, synced = bytes(inode.data), inode.synced
    if rng is None or len(data) <= len(synced) or not data.startswith(synced):
        return synced
    kept = rng.randint(0, len(data) - len(synced))
    tail = bytearray(data[len(synced) : len(synced) + kept])
    if tail and rng.random() < 0.3:
        # The last sector was being written: it holds a mix of old (zero) and new bytes.
        start = max(0, len(tail) - rng.randint(1, SECTOR))
        for i in range(start, len(tail)):
            if rng.random() < 0.5:
                tail[i] = 0
    return synced + bytes(tail)
