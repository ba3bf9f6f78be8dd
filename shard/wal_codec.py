"""Encodes partition writes as WAL payloads and back.

Layout: one tag byte, then for an upsert a little-endian (n, dim, header length) triple, a JSON header
(ids and metadata) and the n x dim float32 vectors exactly as the index received them (already normalised
under cosine), so replay repeats the write bit for bit. A delete is the tag and a JSON list of ids: a
delete-by-filter is logged as the ids it matched when it ran, so replay never depends on re-evaluating it.
JSON keeps int vs float apart (1 vs 1.0); string lists are the only arrays metadata holds, so they come
back as tuples.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from quiver.filters import Metadata

_UPSERT = b"U"
_DELETE = b"D"
_HEADER = struct.Struct("<III")


@dataclass(frozen=True)
class UpsertRecord:
    ids: list[str]
    vectors: np.ndarray
    metadata: list[Metadata] | None


@dataclass(frozen=True)
class DeleteRecord:
    ids: list[str]


WalRecord = UpsertRecord | DeleteRecord


def encode(record: WalRecord) -> bytes:
    if isinstance(record, DeleteRecord):
        return _DELETE + json.dumps(record.ids).encode("utf-8")
    header = json.dumps({"ids": record.ids, "metadata": record.metadata}).encode("utf-8")
    n, dim = record.vectors.shape
    return b"".join((_UPSERT, _HEADER.pack(n, dim, len(header)), header, record.vectors.astype("<f4", copy=False).tobytes()))


def _tuples(metadata: dict) -> Metadata:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in metadata.items()}


def decode(payload: bytes) -> WalRecord:
    tag, body = payload[:1], memoryview(payload)[1:]
    if tag == _DELETE:
        return DeleteRecord(json.loads(bytes(body)))
    if tag != _UPSERT:
        raise ValueError(f"unknown WAL record tag {tag!r}")
    n, dim, header_len = _HEADER.unpack_from(body)
    start = _HEADER.size
    header = json.loads(bytes(body[start : start + header_len]))
    vectors = np.frombuffer(body[start + header_len :], dtype="<f4").reshape(n, dim)
    metadata = [_tuples(m) for m in header["metadata"]] if header["metadata"] is not None else None
    return UpsertRecord(header["ids"], vectors, metadata)
