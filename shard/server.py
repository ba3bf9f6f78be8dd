"""Builds the shard's grpc.aio server: Shard service, standard health and reflection."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from quiver.grpc_server import add_health_and_reflection, add_service, bind, server_options, set_health
from quiver.v1 import shard_pb2
from shard.admission import Admission
from shard.config import ShardConfig
from shard.executors import ShardExecutors
from shard.heap_release import fix_mmap_threshold
from quiver.metrics import MetricsEndpoint
from shard import partition_metrics
from shard.partition_registry import PartitionRegistry
from shard.replication import Replication
from shard.servicer import ShardServicer
from quiver.control_plane.store import ClusterSnapshot, ClusterStore, Registration
from quiver.control_plane.watcher import ClusterWatcher
from quiver.shard_channels import ShardPool
from quiver.errors import Unavailable

T = TypeVar("T")
_log = logging.getLogger("shard")

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
        self.servicer = ShardServicer(self.registry, config, self.admission, self.executors)
        add_service(self.server, self.servicer, shard_pb2.DESCRIPTOR.services_by_name["Shard"])
        self.registration: Registration | None = None
        self.replication: Replication | None = None
        self._watcher: ClusterWatcher | None = None
        self._peers: ShardPool | None = None
        self.health = add_health_and_reflection(self.server, SERVICE_NAME)
        self.port = 0  # bound by start()
        self.metrics = MetricsEndpoint(config.metrics_port, config.metrics_host)

    @property
    def address(self) -> str:
        return self.config.advertise_address or f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        fix_mmap_threshold(self.config.malloc_mmap_threshold_bytes)  # before recovery allocates anything
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.registry.open_all()
        partition_metrics.watch(self.registry, self.config.server_id)
        self.metrics.start()
        # Bound only once every partition is open: a bound port accepts connections at once, and calls on
        # them hang until the server starts, so a restarting server would be a black hole to routers and
        # primaries (which still see its lease) for as long as its WAL replay takes, instead of a refused
        # connection they fail over from at once.
        self.port = bind(self.server, self.config.host, self.config.port)
        await self.server.start()
        if self.config.etcd_endpoints:
            await self._join_cluster()
        self._serving = True
        await set_health(self.health, [SERVICE_NAME], serving=True)
        await self.health.set(
            PARTITIONS_HEALTH_NAME,
            health_pb2.HealthCheckResponse.NOT_SERVING if self.registry.failed else health_pb2.HealthCheckResponse.SERVING,
        )
        await self._update_writes_health()

    async def _join_cluster(self) -> None:
        """Register under a lease and follow the cluster state: which partitions this server leads."""
        from quiver.control_plane.etcd_client import EtcdClient  # the etcd client is a cluster-only dependency

        store = ClusterStore(EtcdClient(list(self.config.etcd_endpoints), timeout=5.0), self.config.etcd_root)
        self._peers = ShardPool(self.config.max_message_bytes)
        self._watcher = ClusterWatcher(store, on_change=self._cluster_changed)
        await self._until_etcd_answers(self._watcher.start, "reading the cluster state")
        self.replication = Replication(self.config.server_id, store, self._watcher, self.registry, self._peers, self.config.replication)
        self.servicer.replication = self.replication
        self.registry.on_created = self._partition_created
        self.registration = await self._until_etcd_answers(
            lambda: store.register_server(self.config.server_id, self.address, self.config.lease_ttl_s), "registering",
        )
        await self.replication.sync()

    async def _until_etcd_answers(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """A start-up step retried while etcd is unreachable (it may be restarting too, as after a power cut
        of the whole cluster), for up to etcd_start_wait_s; then its error stands."""
        give_up_at = time.monotonic() + self.config.etcd_start_wait_s
        pause = 0.1
        while True:
            try:
                return await step()
            except Unavailable as error:
                if time.monotonic() + pause >= give_up_at:
                    raise
                _log.warning("shard server %s: %s failed, retrying in %.1f s: %s", self.config.server_id, what, pause, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _cluster_changed(self, snapshot: ClusterSnapshot) -> None:
        if self.replication is not None:
            await self.replication.sync(snapshot)

    async def _partition_created(self) -> None:
        if self.replication is not None:
            await self.replication.sync()

    async def leave_cluster(self) -> None:
        """Out of etcd: routers stop sending here once their watch sees it. Replication goes on until `stop`,
        so writes that still arrive meanwhile are replicated as ever."""
        if self.registration is not None:
            await self.registration.close()
            self.registration = None

    async def _stop_replication(self) -> None:
        if self.replication is not None:
            await self.replication.close()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._peers is not None:
            await self._peers.close()

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
        await self.leave_cluster()
        await self.server.stop(grace)
        await self._stop_replication()
        await self.registry.close_all(snapshot=True)
        partition_metrics.unwatch(self.registry)
        self.metrics.stop()
        self.executors.shutdown()


async def create_server(config: ShardConfig) -> tuple[ShardServer, int]:
    """A started server and its port (bind port 0 in tests)."""
    server = ShardServer(config)
    await server.start()
    return server, server.port
