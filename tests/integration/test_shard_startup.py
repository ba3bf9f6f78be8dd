"""A starting shard server takes no connection until its partitions are open: a connection accepted
earlier would hang its calls (routers and primaries that still see the server's lease would wait on it
for their whole deadline) instead of being refused, which they fail over from at once."""
from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.store import ClusterStore
from quiver.etcd_process import EtcdProcess
from shard.config import ShardConfig
from shard.server import ShardServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _refuses(port: int) -> bool:
    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) != 0


async def test_connections_are_refused_while_partitions_open_then_served(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    server = ShardServer(ShardConfig(data_dir=tmp_path, port=port))
    opening, release = asyncio.Event(), asyncio.Event()
    open_all = server.registry.open_all

    async def slow_open_all() -> None:  # a long WAL replay, held open by the test
        opening.set()
        await release.wait()
        await open_all()

    monkeypatch.setattr(server.registry, "open_all", slow_open_all)
    starting = asyncio.ensure_future(server.start())
    try:
        await opening.wait()
        assert _refuses(port), "the port took a connection before the server could answer on it"
        release.set()
        await starting
        assert server.port == port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        await starting
        await server.stop(grace=0.1)


async def test_a_server_started_while_etcd_is_down_waits_for_it_and_then_registers(tmp_path) -> None:
    """As after a power cut of the whole cluster: etcd and the shard servers come back in any order."""
    etcd_port = _free_port()
    etcd = EtcdProcess(tmp_path / "etcd", client_port=etcd_port, peer_port=_free_port())
    server = ShardServer(ShardConfig(data_dir=tmp_path / "shard", port=0, etcd_endpoints=(f"127.0.0.1:{etcd_port}",), server_id="s0"))
    starting = asyncio.ensure_future(server.start())
    try:
        await asyncio.sleep(1.0)
        assert not starting.done(), "the server gave up on etcd (or never needed it)"
        await asyncio.to_thread(etcd.start)
        await asyncio.wait_for(starting, 30)
        store = ClusterStore(EtcdClient([etcd.endpoint], timeout=5.0), server.config.etcd_root)
        assert [s.server_id for s in await store.list_servers()] == ["s0"]
    finally:
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await server.stop(grace=0.1)
        etcd.stop()
