"""The file-system operations the shard's durable state is made of, behind one small interface.

The WAL, the snapshot store and a partition's spec file do every write, fsync, rename, delete and
directory fsync through a `Storage`, never through `os` directly. `OsStorage` is the real thing; tests
put a simulated disk in its place that fails chosen operations and loses power (dropping whatever was
not fsynced, tearing unsynced appends), so the durability argument is checked, not just stated.

Semantics every implementation keeps, and every caller relies on:
- data written to a file survives a crash only once that file has been fsynced;
- a created, renamed or deleted name survives a crash only once its directory has been fsynced;
- `make_dirs` is durable on return: each directory it creates is fsynced into its parent.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO, Protocol


class WritableFile(Protocol):
    def write(self, data: bytes | memoryview) -> None:
        """Write all of `data` at the file's end (no durability until `fsync`)."""

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class Storage(Protocol):
    def make_dirs(self, path: Path) -> None: ...

    def list_dir(self, path: Path) -> list[str]:
        """Names in the directory (files and directories)."""

    def exists(self, path: Path) -> bool: ...

    def size(self, path: Path) -> int: ...

    def open_read(self, path: Path) -> BinaryIO: ...

    def create(self, path: Path, *, exclusive: bool = False) -> WritableFile:
        """A new empty file (replacing an existing one unless `exclusive`, which refuses it)."""

    def open_append(self, path: Path) -> WritableFile: ...

    def truncate(self, path: Path, size: int) -> None:
        """Cut the file to `size` bytes and fsync it."""

    def replace(self, source: Path, target: Path) -> None: ...

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None: ...

    def fsync_dir(self, path: Path) -> None: ...

    def remove_tree(self, path: Path) -> None: ...

    def free_bytes(self, path: Path) -> int:
        """Bytes an unprivileged writer can still put on the file system holding `path`."""


class _OsFile:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self._fd, view):]

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class OsStorage:
    """The local file system."""

    def make_dirs(self, path: Path) -> None:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue  # made meanwhile by someone else, who makes it durable
            self.fsync_dir(directory.parent)

    def list_dir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def size(self, path: Path) -> int:
        return path.stat().st_size

    def open_read(self, path: Path) -> BinaryIO:
        return open(path, "rb")

    def create(self, path: Path, *, exclusive: bool = False) -> WritableFile:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        return _OsFile(os.open(path, flags, 0o644))

    def open_append(self, path: Path) -> WritableFile:
        return _OsFile(os.open(path, os.O_WRONLY | os.O_APPEND))

    def truncate(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        path.unlink(missing_ok=missing_ok)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def free_bytes(self, path: Path) -> int:
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize


OS_STORAGE: Storage = OsStorage()


def write_file_atomically(storage: Storage, path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a mix: written
    to a temporary file, fsynced, renamed over `path`, and the rename made durable."""
    tmp = path.with_name(path.name + ".tmp")
    f = storage.create(tmp)
    try:
        f.write(data)
        f.fsync()
    finally:
        f.close()
    storage.replace(tmp, path)
    storage.fsync_dir(path.parent)
