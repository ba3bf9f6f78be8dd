"""Builds the router: etcd watcher, shard channel pool, Router service, health and reflection."""
from __future__ import annotations

import grpc

from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.store import ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.grpc_server import add_health_and_reflection, add_service, bind, server_options, set_health
from quiver.v1 import router_pb2
from quiver.metrics import MetricsEndpoint
from router.admin import Admin
from router.config import RouterConfig
from router.controller import Controller, ControllerPolicy
from router.servicer import RouterServicer
from quiver.shard_channels import ShardPool

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name


class RouterServer:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.etcd = EtcdClient(list(config.etcd_endpoints), timeout=5.0)
        self.store = ClusterStore(self.etcd, config.etcd_root)
        self.watcher = ClusterWatcher(self.store, on_change=self._on_change)
        self.pool = ShardPool(config.max_message_bytes)
        # gRPC refuses RPCs past the limit itself (RESOURCE_EXHAUSTED, before any Python runs), so an
        # overloaded router sheds load cheaply instead of queueing requests until their deadlines pass.
        self.server = grpc.aio.server(options=server_options(config.max_message_bytes), maximum_concurrent_rpcs=config.max_concurrent_rpcs)
        admin = Admin(config, self.store, self.watcher, self.pool)
        self.servicer = RouterServicer(config, self.watcher, self.pool, admin)
        add_service(self.server, self.servicer, router_pb2.DESCRIPTOR.services_by_name["Router"])
        self.health = add_health_and_reflection(self.server, SERVICE_NAME)
        self.port = bind(self.server, config.host, config.port)
        self.servicer.identify(config.router_id or self.address)
        self.metrics = MetricsEndpoint(config.metrics_port, config.metrics_host)
        self.controller = Controller(
            config.router_id or self.address, self.store, self.watcher, self.pool, ControllerPolicy(replace_after_s=config.replace_after_s),
        ) if config.controller else None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def _on_change(self, snapshot) -> None:  # type: ignore[no-untyped-def]
        await self.pool.retain({s.address for s in snapshot.servers.values()})

    async def start(self) -> None:
        await self.watcher.start()
        self.metrics.start()
        await self.server.start()
        if self.controller is not None:
            self.controller.start()
        await set_health(self.health, [SERVICE_NAME], serving=True)

    async def stop(self, grace: float = 5.0) -> None:
        await set_health(self.health, [SERVICE_NAME], serving=False)
        if self.controller is not None:
            await self.controller.stop()
        await self.server.stop(grace)
        await self.servicer.stop_builds()
        await self.watcher.stop()
        await self.pool.close()
        self.servicer.close()
        self.metrics.stop()
        self.etcd.close()


async def create_server(config: RouterConfig) -> tuple[RouterServer, int]:
    server = RouterServer(config)
    await server.start()
    return server, server.port
