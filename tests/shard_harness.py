"""Starting in-process shard servers on loopback for integration tests, and small wire helpers."""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import grpc
import numpy as np

from quiver.v1 import shard_pb2, shard_pb2_grpc, types_pb2
from shard.config import ShardConfig
from shard.server import ShardServer


@asynccontextmanager
async def running_shard(data_dir: Path, **overrides: object) -> AsyncIterator[tuple[ShardServer, shard_pb2_grpc.ShardStub]]:
    server = ShardServer(ShardConfig(data_dir=data_dir, **overrides))  # type: ignore[arg-type]
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, shard_pb2_grpc.ShardStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=1.0)


def ref(collection: str = "docs", shard: int = 0, version: int = 1) -> shard_pb2.PartitionRef:
    return shard_pb2.PartitionRef(collection=collection, shard=shard, version=version)


def spec(dim: int, index: types_pb2.IndexSpec | None = None, metric: int = types_pb2.COSINE, collection: str = "docs") -> shard_pb2.PartitionSpec:
    return shard_pb2.PartitionSpec(ref=ref(collection), dim=dim, metric=metric, index=index or types_pb2.IndexSpec(hnsw=types_pb2.HnswParams()))


def packed(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


async def upsert_in_batches(
    stub: shard_pb2_grpc.ShardStub,
    part: shard_pb2.PartitionRef,
    ids: list[str],
    vectors: np.ndarray,
    metadata: list[types_pb2.Metadata] | None = None,
    batch: int = 2000,
) -> None:
    for start in range(0, len(ids), batch):
        end = start + batch
        await stub.Upsert(
            shard_pb2.UpsertRequest(ref=part, ids=ids[start:end], vectors=packed(vectors[start:end]), metadata=(metadata or [])[start:end])
        )
