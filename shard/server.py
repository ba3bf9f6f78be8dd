"""Builds the shard's grpc.aio server: Shard service, standard health and reflection."""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2

from quiver.grpc_server import add_health_and_reflection, add_service, bind, server_options, set_health
from quiver.v1 import shard_pb2
from shard.admission import Admission
from shard.config import ShardConfig
from shard.executors import ShardExecutors
from quiver.metrics import MetricsEndpoint
from shard import partition_metrics
from shard.partition_registry import PartitionRegistry
from shard.servicer import ShardServicer

SERVICE_NAME = shard_pb2.DESCRIPTOR.services_by_name["Shard"].full_name
# Health of this name is NOT_SERVING while any partition refuses writes (disk full, read-only log); the
# Shard service itself stays SERVING, since reads go on. Stats names the partitions and why.
WRITES_HEALTH_NAME = SERVICE_NAME + ".Writes"
# NOT_SERVING while a partition found on disk could not be opened at start-up (its files are kept, its data
# is not served; the log says why): the server answers for the others, but an operator must look.
PARTITIONS_HEALTH_NAME = SERVICE_NAME + ".Partitions"


class ShardServer:
    """A running shard server; `await start()`, `await stop(grace)`."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.executors = ShardExecutors(config.executors)
        self.registry = PartitionRegistry(
            config.data_dir, config.durability, config.search, server_id=config.server_id,
            on_fault_change=self._fault_changed, executors=self.executors,
        )
        self._serving = False
        self._health_update: asyncio.Task[None] | None = None
        self.server = grpc.aio.server(options=server_options(config.max_message_bytes), maximum_concurrent_rpcs=config.max_concurrent_rpcs)
        self.admission = Admission(config.admission, f"shard server {config.server_id}" if config.server_id else "this shard server")
        add_service(self.server, ShardServicer(self.registry, config, self.admission, self.executors), shard_pb2.DESCRIPTOR.services_by_name["Shard"])
        self.health = add_health_and_reflection(self.server, SERVICE_NAME)
        self.port = bind(self.server, config.host, config.port)
        self.metrics = MetricsEndpoint(config.metrics_port, config.metrics_host)

    @property
    def address(self) -> str:
        return self.config.advertise_address or f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.registry.open_all()
        partition_metrics.watch(self.registry, self.config.server_id)
        self.metrics.start()
        await self.server.start()
        self._serving = True
        await set_health(self.health, [SERVICE_NAME], serving=True)
        await self.health.set(
            PARTITIONS_HEALTH_NAME,
            health_pb2.HealthCheckResponse.NOT_SERVING if self.registry.failed else health_pb2.HealthCheckResponse.SERVING,
        )
        await self._update_writes_health()

    def _fault_changed(self) -> None:
        self._health_update = asyncio.get_running_loop().create_task(self._update_writes_health())

    async def _update_writes_health(self) -> None:
        takes_writes = self._serving and not self.registry.faults()
        await self.health.set(
            WRITES_HEALTH_NAME,
            health_pb2.HealthCheckResponse.SERVING if takes_writes else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    async def begin_drain(self) -> None:
        """Health NOT_SERVING (load balancers and readiness probes move away); calls are still answered."""
        self._serving = False
        await set_health(self.health, [SERVICE_NAME, WRITES_HEALTH_NAME, PARTITIONS_HEALTH_NAME], serving=False)

    async def stop(self, grace: float = 5.0) -> None:
        await self.begin_drain()
        await self.server.stop(grace)
        await self.registry.close_all(snapshot=True)
        partition_metrics.unwatch(self.registry)
        self.metrics.stop()
        self.executors.shutdown()


async def create_server(config: ShardConfig) -> tuple[ShardServer, int]:
    """A started server and its port (bind port 0 in tests)."""
    server = ShardServer(config)
    await server.start()
    return server, server.port
