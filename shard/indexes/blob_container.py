"""A pickle-free container for an index's snapshot: a JSON header and named binary blobs.

Snapshots travel between servers (a replica catching up loads a peer's), so loading one must never run
code a peer chose: no pickle. An index writes its parameters as JSON and its data in the libraries' own
binary formats (hnswlib's index file, faiss's serialized index) or as plain numpy arrays; each blob carries
its length and crc32, checked before anything is handed to a library.

Layout: magic `QIDX1\\n`, a little-endian u32 header length, the JSON header (`header` and the blobs'
names, lengths and crc32s, in order), then the blobs.

Given a directory, `pack` writes the container into an unlinked scratch file there and returns a read-only
memory map of it: a snapshot of a large index then costs page cache, not a second (and third) copy of the
index in process memory; blobs may themselves be maps of files (`map_file`), copied a chunk at a time.
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Union

import numpy as np

_MAGIC = b"QIDX1\n"
_LEN = struct.Struct("<I")


Buffer = Union[bytes, bytearray, memoryview, np.ndarray]
_CHUNK = 8 * 2**20
# The folders libraries write their own files into while a snapshot is staged; a partition removes any left
# by a process that died mid-snapshot (the scratch files themselves are unlinked from the start).
STAGING_PREFIX = "quiver-staging-"


@contextlib.contextmanager
def staging_dir(directory: Path | str | None) -> Iterator[str]:
    """A folder for a library's index file (hnswlib and faiss write only to paths), under `directory`
    (the system's temporary folder when None), removed afterwards; a map of a file in it outlives it."""
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=directory) as path:
        yield path


def scratch_map(directory: Path | str, write: Callable[[IO[bytes]], None]) -> memoryview:
    """What `write` writes into an unlinked scratch file under `directory`, as a read-only map of it."""
    with tempfile.TemporaryFile(prefix="quiver-scratch-", dir=directory) as f:
        write(f)
        f.flush()
        return memoryview(mmap.mmap(f.fileno(), f.tell(), access=mmap.ACCESS_READ))


def map_file(path: Path | str) -> memoryview:
    """A read-only map of a whole file (empty files give an empty view): it stays valid after the file is
    unlinked, for as long as the view lives."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ))


def pack(header: dict[str, Any], blobs: dict[str, Buffer], directory: Path | str | None = None) -> bytes | memoryview:
    views = {name: memoryview(blob).cast("B") for name, blob in blobs.items()}
    meta = json.dumps({
        "header": header,
        "blobs": [{"name": name, "length": view.nbytes, "crc32": zlib.crc32(view)} for name, view in views.items()],
    }).encode("utf-8")
    if directory is None:
        return b"".join((_MAGIC, _LEN.pack(len(meta)), meta, *views.values()))

    def write(f: IO[bytes]) -> None:
        f.write(b"".join((_MAGIC, _LEN.pack(len(meta)), meta)))
        for view in views.values():
            for start in range(0, view.nbytes, _CHUNK):
                f.write(view[start : start + _CHUNK])

    return scratch_map(directory, write)


def unpack(data: bytes | memoryview) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and blobs; ValueError when the container is malformed or any blob fails its check."""
    view = memoryview(data)
    if bytes(view[: len(_MAGIC)]) != _MAGIC:
        raise ValueError("not an index container (bad magic)")
    start = len(_MAGIC) + _LEN.size
    if len(view) < start:
        raise ValueError("index container is truncated")
    (meta_len,) = _LEN.unpack_from(view, len(_MAGIC))
    try:
        meta = json.loads(bytes(view[start : start + meta_len]))
        header, entries = meta["header"], meta["blobs"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"index container header is unreadable: {error}") from None
    offset = start + meta_len
    blobs = {}
    for entry in entries:
        blob = bytes(view[offset : offset + entry["length"]])
        if len(blob) != entry["length"] or zlib.crc32(blob) != entry["crc32"]:
            raise ValueError(f"index container blob {entry['name']!r} is truncated or corrupt")
        blobs[entry["name"]] = blob
        offset += entry["length"]
    if offset != len(view):
        raise ValueError(f"index container has {len(view) - offset} trailing bytes")
    return header, blobs
