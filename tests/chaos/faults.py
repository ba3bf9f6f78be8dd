"""The faults a chaos cycle injects into the real processes of a LocalCluster, and how each is healed.

Each fault is a coroutine pair: `inject` puts it in force (and returns what it hit), `heal` undoes it.
Processes are signalled by pid (SIGKILL, SIGSTOP/SIGCONT) and restarted with their own arguments on
their own data directories, the way an operator or a supervisor would.
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc

from quiver.local_cluster import LocalCluster, ServerProcess
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc
from tests.chaos.ledger import now
from tests.chaos.network import Network
from tests.chaos.workload import COLLECTION


@dataclass
class FaultContext:
    cluster: LocalCluster
    router: router_pb2_grpc.RouterStub
    rng: random.Random
    network: Network
    kills: list[tuple[int, float]] = field(default_factory=list)  # (shard, when) for each killed primary
    servers_started: int = 0  # shard-0 ... shard-{n-1} have been used; a replacement server is shard-{n}

    def server(self, server_id: str) -> ServerProcess:
        return next(s for s in self.cluster.shard_servers if s.args[s.args.index("--server-id") + 1] == server_id)

    def start_new_server(self) -> ServerProcess:
        index = self.servers_started
        self.servers_started += 1
        server = self.cluster.shard_server(index)
        server.start()
        self.network.connect(index, server)
        self.cluster.shard_servers.append(server)
        return server

    async def replicas(self) -> list[router_pb2.ShardReplicaStatus]:
        status = await self.router.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=5)
        return [r for r in status.replicas if r.collection == COLLECTION]


@dataclass(frozen=True)
class Fault:
    name: str
    one_replica: bool  # counts toward the search success target (a one-replica fault)
    inject: Callable[[FaultContext], Awaitable[object]]
    heal: Callable[[FaultContext, object], Awaitable[None]]
    hold_s: float = 1.0


async def _kill_primary(ctx: FaultContext) -> object:
    primaries = [r for r in await ctx.replicas() if r.role == "primary"]
    target = ctx.rng.choice(primaries)
    process = ctx.server(target.server_id)
    await asyncio.to_thread(process.kill)
    ctx.kills.append((target.shard, now()))
    return process


async def _kill_follower(ctx: FaultContext) -> object:
    followers = [r for r in await ctx.replicas() if r.role != "primary"]
    process = ctx.server(ctx.rng.choice(followers).server_id)
    await asyncio.to_thread(process.kill)
    return process


async def _start_again(ctx: FaultContext, process: object) -> None:
    assert isinstance(process, ServerProcess)
    await asyncio.to_thread(process.start)


async def _stop_replica(ctx: FaultContext) -> object:
    process = ctx.server(ctx.rng.choice(await ctx.replicas()).server_id)
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGSTOP)
    return process


async def _continue(ctx: FaultContext, process: object) -> None:
    assert isinstance(process, ServerProcess) and process.process is not None
    os.kill(process.process.pid, signal.SIGCONT)


async def _kill_during_snapshot(ctx: FaultContext) -> object:
    replica = ctx.rng.choice(await ctx.replicas())
    process = ctx.server(replica.server_id)
    channel = grpc.aio.insecure_channel(replica.address)
    ref = shard_pb2.PartitionRef(collection=COLLECTION, shard=replica.shard, version=replica.version)
    snapshot = asyncio.ensure_future(shard_pb2_grpc.ShardStub(channel).Snapshot(shard_pb2.SnapshotRequest(ref=ref), timeout=5))
    await asyncio.sleep(ctx.rng.uniform(0.0, 0.03))
    await asyncio.to_thread(process.kill)
    await asyncio.gather(snapshot, return_exceptions=True)
    await channel.close()
    return process


async def _kill_everything(ctx: FaultContext) -> object:
    for process in ctx.cluster.shard_servers:
        await asyncio.to_thread(process.kill)
    return list(ctx.cluster.shard_servers)


async def _start_all(ctx: FaultContext, processes: object) -> None:
    assert isinstance(processes, list)
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes))


async def _kill_etcd(ctx: FaultContext) -> object:
    await asyncio.to_thread(ctx.cluster.etcd.kill)
    return ctx.cluster.etcd


async def _start_etcd(ctx: FaultContext, etcd: object) -> None:
    await asyncio.to_thread(ctx.cluster.etcd.start)


async def _partition_server(ctx: FaultContext) -> object:
    replica = ctx.rng.choice(await ctx.replicas())
    await asyncio.to_thread(ctx.network.cut, replica.server_id)
    # The fault is real only if the server is unreachable at the address everyone dials: check.
    async with grpc.aio.insecure_channel(replica.address) as channel:
        ref = shard_pb2.PartitionRef(collection=COLLECTION, shard=replica.shard, version=replica.version)
        try:
            await shard_pb2_grpc.ShardStub(channel).ReplicaStatus(shard_pb2.ReplicaStatusRequest(ref=ref), timeout=0.3)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        else:
            raise AssertionError(f"{replica.server_id} still answers at {replica.address} in a partition")
    return replica.server_id


async def _heal_partition(ctx: FaultContext, server_id: object) -> None:
    await asyncio.to_thread(ctx.network.heal, str(server_id))


async def _lose_server(ctx: FaultContext) -> object:
    """A machine gone for good: killed, its disk wiped, never started again."""
    server_id = ctx.rng.choice(await ctx.replicas()).server_id
    process = ctx.server(server_id)
    await asyncio.to_thread(process.kill)
    ctx.cluster.shard_servers.remove(process)
    shutil.rmtree(process.args[process.args.index("--data-dir") + 1])
    return server_id


async def _replace_server(ctx: FaultContext, server_id: object, timeout: float = 60.0) -> None:
    """Once the controller has rebuilt the lost server's replicas elsewhere, a new machine joins (empty,
    with a new id), so the next faults have a spare server again."""
    started = now()
    while any(r.server_id == server_id for r in await ctx.replicas()):
        if now() - started > timeout:
            raise TimeoutError(f"the replicas of {server_id} were not rebuilt on other servers within {timeout}s")
        await asyncio.sleep(0.2)
    await asyncio.to_thread(ctx.start_new_server)


FAULTS: tuple[Fault, ...] = (
    # Held past the servers' lease (2 s), so the controller promotes a replica before the old primary returns.
    Fault("kill_primary", True, _kill_primary, _start_again, hold_s=3.5),
    Fault("kill_follower", True, _kill_follower, _start_again),
    Fault("stop_replica", True, _stop_replica, _continue, hold_s=1.5),
    Fault("kill_during_snapshot", True, _kill_during_snapshot, _start_again, hold_s=0.5),
    Fault("kill_everything", False, _kill_everything, _start_all, hold_s=0.5),
    Fault("kill_etcd", False, _kill_etcd, _start_etcd, hold_s=1.5),
    Fault("partition_server", True, _partition_server, _heal_partition, hold_s=2.5),
    Fault("lose_server", True, _lose_server, _replace_server, hold_s=0.5),
)
