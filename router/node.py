"""`python -m router.node` / `quiver-node`: a router and a shard server in one process (node mode).

For small clusters, and for every machine of a cluster that wants the router beside its data: the router's
calls to the shard server of its own process go straight to its servicer (quiver.local_calls), with no
network hop and no serialisation, so a query whose shards are all local costs one gRPC call (the
client's) instead of 1 + one per shard. The shard server still listens on its own port and registers in
etcd like any other: other routers, other nodes and its replicas reach it over gRPC as ever, and the
router here reaches every other server over gRPC too. A node is one process: SIGKILL takes both roles
down at once, as losing the machine would.
"""
from __future__ import annotations

import quiver.grpc_fork  # noqa: F401 - first, before gRPC loads: its fork handlers off (shard.indexes.forked_call)
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import click
import uvloop

from quiver.gc_tuning import freeze_startup_heap
from quiver.grpc_server import until_stop_signal
from quiver.logs import configure_logging
from quiver.server_options import config_file_option, log_effective_options, with_environment
from router.config import RouterConfig
from router.server import RouterServer
from shard.config import ShardConfig
from shard.executors import ExecutorSizes
from shard.__main__ import port_and_id
from shard.server import ShardServer

_log = logging.getLogger("node")


@dataclass(frozen=True)
class NodeConfig:
    """The node process's configuration: its two roles' own, which must name the same etcd."""

    shard: ShardConfig
    router: RouterConfig

    def __post_init__(self) -> None:
        if self.shard.etcd_endpoints != self.router.etcd_endpoints or self.shard.etcd_root != self.router.etcd_root:
            raise ValueError("a node's shard server and router must use the same etcd endpoints and root")


class Node:
    """A started shard server, then a router whose calls to it stay in process."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.shard = ShardServer(config.shard)
        self.router: RouterServer | None = None

    async def start(self) -> None:
        await self.shard.start()
        self.router = RouterServer(self.config.router)
        self.router.pool.serve_locally(self.shard.address, self.shard.servicer)
        self.router.servicer.search_in_process(self.shard.address, self.shard.servicer)
        await self.router.start()

    async def stop(self, drain_delay_s: float = 0.0) -> None:
        """The shard leaves etcd first (other routers move away), then the router stops, then the shard."""
        await self.shard.begin_drain()
        await self.shard.leave_cluster()
        if drain_delay_s:
            await asyncio.sleep(drain_delay_s)
        if self.router is not None:
            await self.router.stop(grace=5.0)
        await self.shard.stop(grace=5.0)


async def serve(config: NodeConfig) -> None:
    node = Node(config)
    await node.start()
    freeze_startup_heap()  # after recovery: what the node holds from here on is not walked by every GC
    assert node.router is not None
    print(f"quiver-node shard server {node.shard.address} id={config.shard.server_id}", flush=True)
    print(f"quiver-node serving on {node.router.address}", flush=True)
    await until_stop_signal()
    _log.info("shutting down: shard out of etcd, router stopping, shard snapshotting")
    await node.stop(config.shard.drain_delay_s)


@click.command(context_settings={"show_default": True})
@config_file_option
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="The shard server's partitions, WAL and snapshots.")
@click.option("--etcd", "etcd_endpoints", required=True, help="Comma-separated etcd endpoints (host:port).")
@click.option("--etcd-root", default="/quiver/", help="Key prefix of this cluster's state in etcd.")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=0, help="The router's port (0 picks a free one).")
@click.option("--shard-port", default=0, help="The shard server's port (0 picks a free one).")
@click.option("--server-id", default="", help="The shard server's id in the cluster (kept in the data directory on first start).")
@click.option("--advertise", default="", help="Address other servers dial for the shard server, if not host:shard-port.")
@click.option("--lease-ttl", default=5.0, help="Seconds until a dead node's shard server drops out of etcd.")
@click.option("--search-threads", default=0, help="Threads for searches (0: one per core).")
@click.option("--controller/--no-controller", default=RouterConfig.controller, help="Stand for the controller role.")
@click.option("--batch-server-searches/--no-batch-server-searches", default=RouterConfig.batch_server_searches, help="Send the searches that go to one shard server (this node's own included) as one SearchMany call.")
@click.option("--search-in-process/--no-search-in-process", default=RouterConfig.search_in_process, help="Search the partitions this node holds by one direct call into its shard server, not one local call each.")
@click.option("--drain-delay", default=1.0, help="On SIGTERM: seconds between leaving etcd and refusing new calls.")
@click.option("--log-level", default="INFO")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json")
def main(
    data_dir: Path, etcd_endpoints: str, etcd_root: str, host: str, port: int, shard_port: int, server_id: str, advertise: str,
    lease_ttl: float, search_threads: int, controller: bool, batch_server_searches: bool, search_in_process: bool, drain_delay: float, log_level: str, log_format: str,
) -> None:
    configure_logging(log_level, log_format)
    log_effective_options(click.get_current_context())
    shard_port, server_id = port_and_id(host, shard_port, data_dir, server_id)
    endpoints = tuple(e for e in etcd_endpoints.split(",") if e)
    config = NodeConfig(
        shard=ShardConfig(
            data_dir=data_dir, host=host, port=shard_port, etcd_endpoints=endpoints, etcd_root=etcd_root, server_id=server_id,
            advertise_address=advertise, lease_ttl_s=lease_ttl, drain_delay_s=drain_delay, executors=ExecutorSizes(searches=search_threads),
        ),
        router=RouterConfig(
            etcd_endpoints=endpoints, etcd_root=etcd_root, host=host, port=port, controller=controller, batch_server_searches=batch_server_searches, search_in_process=search_in_process,
        ),
    )
    uvloop.run(serve(config))


with_environment(main, "QUIVER_NODE")

if __name__ == "__main__":
    main()
