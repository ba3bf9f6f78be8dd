"""A shard process as users run it: health and reflection, and a graceful SIGTERM that snapshots."""
from __future__ import annotations

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import shard_pb2, shard_pb2_grpc
from tests.shard_harness import packed, ref, spec


async def test_health_reflection_and_a_graceful_stop_that_snapshots_and_recovers(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    server = ServerProcess(["-m", "shard", "--data-dir", str(data_dir), "--port", str(port)], tmp_path / "shard.log").start()
    vectors = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="quiver.v1.Shard"))
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = [s.name async for r in replies for s in r.list_services_response.service]
            assert "quiver.v1.Shard" in services and "grpc.health.v1.Health" in services

            stub = shard_pb2_grpc.ShardStub(channel)
            await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(16)))
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"v{i}" for i in range(500)], vectors=packed(vectors)))
        server.stop()
        assert server.process is not None and server.process.returncode == 0
        assert list((data_dir / "partitions").glob("*/*/*/snapshots/snapshot-*.qsnap")), "SIGTERM should leave a snapshot"

        server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()), wait_for_ready=True, timeout=20)).partitions[0]
            assert stats.point_count == 500 and stats.last_snapshot_unix > 0
            found = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(vectors[:3]), k=1))
            assert [r.ids[0] for r in found.results] == ["v0", "v1", "v2"]
    finally:
        server.stop()
