"""Builds the shard's grpc.aio server: Shard service, standard health and reflection."""
from __future__ import annotations

import grpc

from quiver.grpc_server import add_health_and_reflection, bind, server_options, set_health
from quiver.v1 import shard_pb2, shard_pb2_grpc
from shard.config import ShardConfig
from shard.partition_registry import PartitionRegistry
from shard.servicer import ShardServicer

SERVICE_NAME = shard_pb2.DESCRIPTOR.services_by_name["Shard"].full_name


class ShardServer:
    """A running shard server; `await start()`, `await stop(grace)`."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.registry = PartitionRegistry(config.data_dir, config.durability, config.search)
        self.server = grpc.aio.server(options=server_options(config.max_message_bytes))
        shard_pb2_grpc.add_ShardServicer_to_server(ShardServicer(self.registry, config), self.server)
        self.health = add_health_and_reflection(self.server, SERVICE_NAME)
        self.port = bind(self.server, config.host, config.port)

    @property
    def address(self) -> str:
        return self.config.advertise_address or f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.registry.open_all()
        await self.server.start()
        await set_health(self.health, [SERVICE_NAME], serving=True)

    async def stop(self, grace: float = 5.0) -> None:
        await set_health(self.health, [SERVICE_NAME], serving=False)
        await self.server.stop(grace)
        await self.registry.close_all(snapshot=True)


async def create_server(config: ShardConfig) -> tuple[ShardServer, int]:
    """A started server and its port (bind port 0 in tests)."""
    server = ShardServer(config)
    await server.start()
    return server, server.port
