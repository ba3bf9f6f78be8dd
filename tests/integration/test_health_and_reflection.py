"""Health and reflection of a real in-process shard server: a partition that cannot be opened turns its own
health name NOT_SERVING while the server keeps serving the others; reflection answers on v1 and v1alpha."""
from __future__ import annotations

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from quiver.specs import PartitionKey, PartitionSpec
from quiver.v1 import shard_pb2, shard_pb2_grpc
from quiver.wire.specs import partition_spec_to_proto
from shard.config import ShardConfig
from shard.server import PARTITIONS_HEALTH_NAME, SERVICE_NAME, WRITES_HEALTH_NAME, ShardServer

GOOD = PartitionSpec(PartitionKey("good", 0, 1), dim=4, metric="cosine", index_kind="flat")
BAD = PartitionSpec(PartitionKey("bad", 0, 1), dim=4, metric="cosine", index_kind="flat")


async def started(tmp_path) -> ShardServer:  # type: ignore[no-untyped-def]
    server = ShardServer(ShardConfig(data_dir=tmp_path, port=0))
    await server.start()
    return server


async def health_of(address: str, *names: str) -> list[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return [(await stub.Check(health_pb2.HealthCheckRequest(service=n), timeout=5)).status for n in names]


async def test_a_partition_that_cannot_be_opened_is_reported_by_health_and_the_others_serve(tmp_path):
    server = await started(tmp_path)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        for spec in (GOOD, BAD):
            await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=partition_spec_to_proto(spec)), timeout=5)
        await stub.Upsert(shard_pb2.UpsertRequest(ref=shard_pb2.PartitionRef(collection="good", shard=0, version=1), ids=["a"],
                                                  vectors=np.ones(4, "<f4").tobytes()), timeout=5)
    assert await health_of(server.address, PARTITIONS_HEALTH_NAME) == [health_pb2.HealthCheckResponse.SERVING]
    await server.stop(0)
    (spec_file,) = tmp_path.glob("partitions/bad/shard-*/v*/spec.json")
    spec_file.write_text("{ not json")  # damaged: this partition cannot be opened again

    server = await started(tmp_path)
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_of(server.address, "", SERVICE_NAME, WRITES_HEALTH_NAME, PARTITIONS_HEALTH_NAME) == [
            serving, serving, serving, not_serving]
        assert list(server.registry.failed) == [spec_file.parent]
        async with grpc.aio.insecure_channel(server.address) as channel:
            got = await shard_pb2_grpc.ShardStub(channel).Get(
                shard_pb2.GetRequest(ref=shard_pb2.PartitionRef(collection="good", shard=0, version=1), ids=["a"]), timeout=5)
        assert [p.id for p in got.points] == ["a"]
    finally:
        await server.stop(0)


async def list_services(address: str, package: str) -> list[str]:
    method = f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo"
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            method, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        responses = [r async for r in call]
    return sorted(s.name for s in responses[0].list_services_response.service)


async def test_reflection_answers_on_v1_and_v1alpha(tmp_path):
    server = await started(tmp_path)
    try:
        for package in ("v1", "v1alpha"):
            names = await list_services(server.address, package)
            assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection"} <= set(names), (package, names)
    finally:
        await server.stop(0)
