"""A shard process killed with SIGKILL mid-stream keeps every acknowledged write, and nothing else."""
from __future__ import annotations

import asyncio
import random

import grpc
import numpy as np

from quiver.v1 import shard_pb2, shard_pb2_grpc
from tests.data_fixtures import glove_subset
from quiver.local_cluster import ServerProcess, free_port
from tests.shard_harness import packed, ref, spec


async def stream_upserts(stub, base: np.ndarray, acknowledged: list[str], sent: set[str], writers: int = 4) -> None:
    """Concurrent writers (so group commit batches them) until the server dies."""
    counter = iter(range(10**9))

    async def writer() -> None:
        while True:
            batch = [next(counter) for _ in range(random.randint(1, 40))]
            ids = [f"p{i}" for i in batch]
            sent.update(ids)
            try:
                await stub.Upsert(
                    shard_pb2.UpsertRequest(ref=ref(), ids=ids, vectors=packed(base[[i % len(base) for i in batch]])),
                    timeout=10,
                )
            except grpc.aio.AioRpcError:
                return
            acknowledged.extend(ids)

    await asyncio.gather(*(writer() for _ in range(writers)))


async def test_sigkill_mid_stream_loses_no_acknowledged_point_and_invents_none(tmp_path):
    base = glove_subset().base
    port = free_port()
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", str(port)], tmp_path / "shard.log").start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = shard_pb2_grpc.ShardStub(channel)
    try:
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        acknowledged: list[str] = []
        sent: set[str] = set()
        streaming = asyncio.create_task(stream_upserts(stub, base, acknowledged, sent))
        while len(acknowledged) < 3000:
            await asyncio.sleep(0.05)
        server.kill()  # SIGKILL: no graceful shutdown, no final snapshot
        await streaming
        assert len(acknowledged) >= 3000

        server.start()
        got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=acknowledged), timeout=30, wait_for_ready=True)
        present = [p.id for p in got.points]
        assert set(present) == set(acknowledged), f"{len(set(acknowledged) - set(present))} acknowledged points lost"
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
        # Unacknowledged in-flight writes may or may not have landed, but nothing that was never sent.
        all_present = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=sorted(sent)), timeout=30)
        assert stats.point_count == len(all_present.points)
        search = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:20]), k=50))
        for result in search.results:
            assert len(result.ids) == len(set(result.ids)), "duplicate ids in a result"
            assert set(result.ids) <= sent
    finally:
        await channel.close()
        server.stop()
