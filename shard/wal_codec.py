"""Encodes partition writes as WAL payloads and back.

Layout: one tag byte, then for an upsert a little-endian (n, dim, header length) triple, a JSON header
(ids and metadata) and the n x dim float32 vectors exactly as the index received them (already normalised
under cosine), so replay repeats the write bit for bit. A delete is the tag and a JSON list of ids: a
delete-by-filter is logged as the ids it matched when it ran, so replay never depends on re-evaluating it.
JSON keeps int vs float apart (1 vs 1.0); string lists are the only arrays metadata holds, so they come
back as tuples.

A record written in a replication term (any record since replication: the primary's term when it assigned
the record its LSN) has a lower-case tag followed by the term as a little-endian u64. Two replicas holding
a record at the same LSN with the same term hold the same record (one primary per term assigns each LSN
once), which is how catch-up finds where a returning replica's log stops matching the primary's. Records
from before replication have the upper-case tag and term 0.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from quiver.filters import Metadata

_UPSERT = b"U"
_DELETE = b"D"
_TERMED = {b"u": _UPSERT, b"d": _DELETE}
_HEADER = struct.Struct("<III")
_TERM = struct.Struct("<Q")


@dataclass(frozen=True)
class UpsertRecord:
    ids: list[str]
    vectors: np.ndarray
    metadata: list[Metadata] | None
    term: int = 0


@dataclass(frozen=True)
class DeleteRecord:
    ids: list[str]
    term: int = 0


WalRecord = UpsertRecord | DeleteRecord


def _tag(base: bytes, term: int) -> bytes:
    return base.lower() + _TERM.pack(term) if term else base


def encode(record: WalRecord) -> bytes:
    if isinstance(record, DeleteRecord):
        return _tag(_DELETE, record.term) + json.dumps(record.ids).encode("utf-8")
    header = json.dumps({"ids": record.ids, "metadata": record.metadata}).encode("utf-8")
    n, dim = record.vectors.shape
    return b"".join((_tag(_UPSERT, record.term), _HEADER.pack(n, dim, len(header)), header, record.vectors.astype("<f4", copy=False).tobytes()))


def term_of(payload: bytes) -> int:
    """The term a logged record was written in (0: before replication), without decoding the rest."""
    return _TERM.unpack_from(payload, 1)[0] if payload[:1] in _TERMED else 0


def _tuples(metadata: dict) -> Metadata:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in metadata.items()}


def decode(payload: bytes) -> WalRecord:
    tag, body = payload[:1], memoryview(payload)[1:]
    term = 0
    if tag in _TERMED:
        tag, term, body = _TERMED[tag], _TERM.unpack_from(body)[0], body[_TERM.size :]
    if tag == _DELETE:
        return DeleteRecord(json.loads(bytes(body)), term)
    if tag != _UPSERT:
        raise ValueError(f"unknown WAL record tag {tag!r}")
    n, dim, header_len = _HEADER.unpack_from(body)
    start = _HEADER.size
    header = json.loads(bytes(body[start : start + header_len]))
    vectors = np.frombuffer(body[start + header_len :], dtype="<f4").reshape(n, dim)
    metadata = [_tuples(m) for m in header["metadata"]] if header["metadata"] is not None else None
    return UpsertRecord(header["ids"], vectors, metadata, term)
