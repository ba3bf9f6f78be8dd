"""What the shard and router gRPC servers share: channel options and the standard health service."""
from __future__ import annotations

from typing import Iterable

from grpc_health.v1 import health, health_pb2


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Two servers must never share a port by accident (tests bind many on one machine).
        ("grpc.so_reuseport", 0),
    ]


async def set_health(servicer: health.aio.HealthServicer, services: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *services):
        await servicer.set(name, status)
