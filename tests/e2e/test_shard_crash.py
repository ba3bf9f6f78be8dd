"""A shard process killed with SIGKILL mid-stream keeps every acknowledged write, and nothing else.

Every RPC carries a deadline and the writers are bounded, so a server that errors or stops answering
fails the test with what it answered instead of hanging it.
"""
from __future__ import annotations

import asyncio
import random

import grpc
import numpy as np

from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import shard_pb2, shard_pb2_grpc
from tests.data_fixtures import glove_subset
from tests.shard_harness import packed, ref, spec

TARGET_ACKNOWLEDGED = 3000
MAX_BATCHES_PER_WRITER = 5000  # far more than the target needs; only a server that never dies reaches it
RPC_TIMEOUT_S = 30.0
STREAM_TIMEOUT_S = 240.0  # a bound on reaching the target, not a performance expectation


class Writers:
    """Concurrent writers (so group commit batches them) until the server dies."""

    def __init__(self, stub: shard_pb2_grpc.ShardStub, base: np.ndarray, count: int = 4) -> None:
        self.acknowledged: list[str] = []
        self.sent: set[str] = set()
        self.killed = False
        self.enough = asyncio.Event()
        self._stub, self._base, self._counter = stub, base, iter(range(10**9))
        self._tasks = [asyncio.create_task(self._write()) for _ in range(count)]
        self.task = asyncio.gather(*self._tasks)

    async def _write(self) -> None:
        for _ in range(MAX_BATCHES_PER_WRITER):
            batch = [next(self._counter) for _ in range(random.randint(1, 40))]
            ids = [f"p{i}" for i in batch]
            self.sent.update(ids)
            try:
                await self._stub.Upsert(
                    shard_pb2.UpsertRequest(ref=ref(), ids=ids, vectors=packed(self._base[[i % len(self._base) for i in batch]])),
                    timeout=RPC_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                if self.killed:
                    return  # the server died under this write: it may or may not have landed
                raise AssertionError(f"upsert failed before the server was killed: {exc.code().name}: {exc.details()}") from exc
            self.acknowledged.extend(ids)
            if len(self.acknowledged) >= TARGET_ACKNOWLEDGED:
                self.enough.set()

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_for_target(self) -> None:
        """Until TARGET_ACKNOWLEDGED writes are acknowledged; a writer's failure is raised at once."""
        enough = asyncio.create_task(self.enough.wait())
        try:
            done, _ = await asyncio.wait({enough, self.task}, timeout=STREAM_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            enough.cancel()
        if self.task in done:
            self.task.result()  # raises the writer's failure
            raise AssertionError(f"writers stopped after {len(self.acknowledged)} acknowledged writes with the server alive")
        assert enough in done, f"only {len(self.acknowledged)} writes acknowledged within {STREAM_TIMEOUT_S:.0f}s"


async def test_sigkill_mid_stream_loses_no_acknowledged_point_and_invents_none(tmp_path):
    base = glove_subset().base
    port = free_port()
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", str(port)], tmp_path / "shard.log").start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = shard_pb2_grpc.ShardStub(channel)
    writers: Writers | None = None
    try:
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])), timeout=RPC_TIMEOUT_S)
        writers = Writers(stub, base)
        await writers.wait_for_target()
        writers.killed = True
        server.kill()  # SIGKILL: no graceful shutdown, no final snapshot
        await asyncio.wait_for(writers.task, timeout=2 * RPC_TIMEOUT_S)
        acknowledged, sent = writers.acknowledged, writers.sent
        assert len(acknowledged) >= TARGET_ACKNOWLEDGED

        server.start()
        got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=acknowledged), timeout=2 * RPC_TIMEOUT_S, wait_for_ready=True)
        present = [p.id for p in got.points]
        assert set(present) == set(acknowledged), f"{len(set(acknowledged) - set(present))} acknowledged points lost"
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()), timeout=RPC_TIMEOUT_S)).partitions[0]
        # Unacknowledged in-flight writes may or may not have landed, but nothing that was never sent.
        all_present = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=sorted(sent)), timeout=RPC_TIMEOUT_S)
        assert stats.point_count == len(all_present.points)
        search = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:20]), k=50), timeout=RPC_TIMEOUT_S)
        for result in search.results:
            assert len(result.ids) == len(set(result.ids)), "duplicate ids in a result"
            assert set(result.ids) <= sent
    finally:
        if writers is not None:
            await writers.cancel()
        await channel.close()
        server.stop()
