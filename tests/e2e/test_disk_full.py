"""A shard server whose data volume fills up: writes refused with RESOURCE_EXHAUSTED before anything is
logged, reads going on, the writes-health NOT_SERVING, and writes resuming by themselves once space is
freed. The volume is a small tmpfs this test mounts and unmounts (root only; skipped otherwise)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import shard_pb2, shard_pb2_grpc, types_pb2
from shard.server import SERVICE_NAME, WRITES_HEALTH_NAME
from tests.data_fixtures import glove_subset
from tests.eventually import assert_eventually_async
from tests.shard_harness import packed, ref, spec

VOLUME_BYTES = 24 * 2**20
RESERVE_BYTES = 6 * 2**20
TIMEOUT_S = 30.0


@contextlib.contextmanager
def small_volume(path: Path) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


async def health(channel: grpc.aio.Channel, name: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT_S)
    return reply.status


async def test_a_full_volume_refuses_writes_before_logging_keeps_reads_and_resumes_once_space_is_freed(tmp_path):
    base = glove_subset().base[:1200]
    with small_volume(tmp_path / "volume") as volume:
        port = free_port()
        server = ServerProcess(
            ["-m", "shard", "--data-dir", str(volume / "data"), "--port", str(port), "--server-id", "disk-test",
             "--min-free-bytes", str(RESERVE_BYTES), "--fault-retry-s", "0.2"],
            tmp_path / "shard.log",
        ).start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = shard_pb2_grpc.ShardStub(channel)
        try:
            flat = spec(base.shape[1], types_pb2.IndexSpec(flat=types_pb2.FlatParams()))
            await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=flat), timeout=TIMEOUT_S)
            ids = [f"p{i}" for i in range(1000)]
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=ids, vectors=packed(base[:1000])), timeout=TIMEOUT_S)

            ballast = volume / "ballast"
            ballast.write_bytes(b"\0" * (free_bytes(volume) - RESERVE_BYTES + 2**20))  # leaves less than the reserve
            stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()), timeout=TIMEOUT_S)).partitions[0]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["late"], vectors=packed(base[1000:1001])), timeout=TIMEOUT_S)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk-test" in refused.value.details() and str(volume / "data") in refused.value.details()
            assert "grpc-retry-pushback-ms" in dict(refused.value.trailing_metadata())
            after = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()), timeout=TIMEOUT_S)).partitions[0]
            assert (after.wal_bytes, after.last_lsn) == (stats.wal_bytes, stats.last_lsn)  # nothing was logged
            assert after.write_state == "disk_full" and str(volume / "data") in after.write_fault
            assert await health(channel, WRITES_HEALTH_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await health(channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING

            # Reads go on, and see every point written before.
            found = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:5]), k=1), timeout=TIMEOUT_S)
            assert [r.ids[0] for r in found.results] == ids[:5]
            got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=ids + ["late"]), timeout=TIMEOUT_S)
            assert len(got.points) == 1000

            ballast.unlink()  # the operator frees space: nothing else to do
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["late"], vectors=packed(base[1000:1001])), timeout=TIMEOUT_S)
            assert (await stub.Stats(shard_pb2.StatsRequest(ref=ref()), timeout=TIMEOUT_S)).partitions[0].write_state == "ok"
            await assert_eventually_async(
                lambda: _is(health(channel, WRITES_HEALTH_NAME), health_pb2.HealthCheckResponse.SERVING), timeout=10
            )
            server.stop()
            server.start()  # and the write made after the fault is durable
            got = await stub.Get(shard_pb2.GetRequest(ref=ref(), ids=["late"]), timeout=TIMEOUT_S, wait_for_ready=True)
            assert [p.id for p in got.points] == ["late"]
        finally:
            await channel.close()
            server.stop()


async def _is(status: object, expected: int) -> bool:
    return await status == expected  # type: ignore[misc]
