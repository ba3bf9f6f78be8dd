"""A pickle-free container for an index's snapshot: a JSON header and named binary blobs.

Snapshots travel between servers (a replica catching up loads a peer's), so loading one must never run
code a peer chose: no pickle. An index writes its parameters as JSON and its data in the libraries' own
binary formats (hnswlib's index file, faiss's serialized index) or as plain numpy arrays; each blob carries
its length and crc32, checked before anything is handed to a library.

Layout: magic `QIDX1\\n`, a little-endian u32 header length, the JSON header (`header` and the blobs'
names, lengths and crc32s, in order), then the blobs.
"""
from __future__ import annotations

import json
import struct
import zlib
from typing import Any

_MAGIC = b"QIDX1\n"
_LEN = struct.Struct("<I")


def pack(header: dict[str, Any], blobs: dict[str, bytes]) -> bytes:
    meta = json.dumps({
        "header": header,
        "blobs": [{"name": name, "length": len(blob), "crc32": zlib.crc32(blob)} for name, blob in blobs.items()],
    }).encode("utf-8")
    return b"".join((_MAGIC, _LEN.pack(len(meta)), meta, *blobs.values()))


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
