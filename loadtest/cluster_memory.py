"""Memory per vector of a loaded collection, as the shards report it and as the OS sees it.

- Shard estimates: every shard server's Stats RPC (index bytes and metadata + id-map bytes, per
  partition), summed over the serving partitions of the collection and divided by its points. These
  are the adapters' own accounting (hnswlib's serialized size, faiss code/list arithmetic), not RSS.
- RSS growth: with --cluster local:N the shard server processes are this machine's, so their
  resident set is read from /proc before and after the bulk load. This is everything a shard holds
  for the points: index, id map, metadata, WAL buffers, allocator slack (including memory freed by
  IVF training that the allocator keeps); it is the figure to hold a sizing plan against.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import grpc

from quiver.client import AsyncClient
from quiver.v1 import shard_pb2, shard_pb2_grpc


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident set of the given processes together (0 for any that are gone)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


async def shard_estimates(client: AsyncClient, collection: str) -> dict[str, Any]:
    status = await client.status()
    serving = {(r.address, r.shard, r.version) for r in status.replicas if r.collection == collection}
    totals = {"partitions": 0, "points": 0, "index_bytes": 0, "metadata_bytes": 0, "trained": True}
    for address in sorted({a for a, _, _ in serving}):
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await shard_pb2_grpc.ShardStub(channel).Stats(shard_pb2.StatsRequest(), timeout=30)
        for p in reply.partitions:
            if (address, p.spec.ref.shard, p.spec.ref.version) in serving and p.spec.ref.collection == collection:
                totals["partitions"] += 1
                totals["points"] += p.point_count
                totals["index_bytes"] += p.index_memory_bytes
                totals["metadata_bytes"] += p.metadata_memory_bytes
                totals["trained"] = totals["trained"] and p.trained
    points = totals["points"]
    totals["index_bytes_per_vector"] = totals["index_bytes"] / points if points else None
    totals["metadata_and_id_bytes_per_vector"] = totals["metadata_bytes"] / points if points else None
    return totals
