"""One gRPC channel (and stub) per shard server address, created once and reused by every request.

Creating a channel per request would cost a TCP + HTTP/2 handshake each time; the hot path only looks
up a dict. Channels for addresses that left the cluster are dropped by `retain`: new calls get a fresh
channel if the address comes back, and the old one is closed only after `close_grace_s`, so the calls
still running on it (a server that is draining answers them) finish instead of being cancelled here.

In node mode (router/node.py) the shard server in this very process is `serve_locally`: its address gets
a stub that calls the servicer directly (quiver.local_calls), with no network hop and no serialisation.
"""
from __future__ import annotations

import asyncio

import grpc

from quiver.local_calls import LocalStub
from quiver.v1 import shard_pb2, shard_pb2_grpc

# Every unary Shard method can be called in process; a streaming one (InstallSnapshot) goes over the wire.
_LOCAL_METHODS = tuple(
    m.name for m in shard_pb2.DESCRIPTOR.services_by_name["Shard"].methods if not m.client_streaming and not m.server_streaming
)


class ShardPool:
    def __init__(self, max_message_bytes: int, close_grace_s: float = 10.0) -> None:
        self._close_grace_s = close_grace_s
        self._draining: dict[grpc.aio.Channel, asyncio.Task[None]] = {}
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            # Reconnect quickly after a shard restarts instead of backing off for up to two minutes.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, shard_pb2_grpc.ShardStub] = {}
        self._local: dict[str, object] = {}  # address -> the ShardServicer serving it in this process

    def serve_locally(self, address: str, servicer: object) -> None:
        """Calls to `address` go to `servicer`, in this process, from now on."""
        self._local[address] = servicer
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if channel is not None:  # a stub made before: its calls may still run, so closed after the grace
            self._draining[channel] = asyncio.get_event_loop().create_task(channel.close(grace=self._close_grace_s))

    def stub(self, address: str) -> shard_pb2_grpc.ShardStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
            stub = shard_pb2_grpc.ShardStub(channel)
            servicer = self._local.get(address)
            if servicer is not None:
                stub = LocalStub(servicer, stub, _LOCAL_METHODS)  # type: ignore[assignment]
            self._stubs[address] = stub
        return stub

    async def retain(self, addresses: set[str]) -> None:
        for address in [a for a in self._channels if a not in addresses]:
            self._stubs.pop(address)
            channel = self._channels.pop(address)
            self._draining[channel] = asyncio.get_running_loop().create_task(channel.close(grace=self._close_grace_s))
            self._draining[channel].add_done_callback(lambda _, c=channel: self._draining.pop(c, None))

    async def close(self) -> None:
        channels = [*self._channels.values(), *self._draining]
        for task in list(self._draining.values()):
            task.cancel()
        self._channels.clear()
        self._stubs.clear()
        self._draining.clear()
        for channel in channels:
            await channel.close()
