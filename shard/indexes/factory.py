"""Builds or restores the adapter for an index kind."""
from __future__ import annotations

from quiver.errors import InvalidArgument
from shard.indexes.base import IndexConfig, VectorIndex
from shard.indexes.flat import FlatIndex
from shard.indexes.hnsw import HnswIndex
from shard.indexes.ivf_pq import IvfPqIndex

_KINDS = {"hnsw": HnswIndex, "ivf_pq": IvfPqIndex, "flat": FlatIndex}


def create_index(config: IndexConfig) -> VectorIndex:
    try:
        kind = _KINDS[config.kind]
    except KeyError:
        raise InvalidArgument(f"unknown index kind {config.kind!r}; expected one of {sorted(_KINDS)}") from None
    return kind(config)  # type: ignore[return-value]


def load_index(config: IndexConfig, data: bytes) -> VectorIndex:
    return _KINDS[config.kind].from_bytes(config, data)  # type: ignore[attr-defined,no-any-return]
