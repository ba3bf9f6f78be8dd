"""The faults a chaos cycle injects into the real processes of a LocalCluster, and how each is healed.

Each fault is a coroutine pair: `inject` puts it in force (and returns what it hit), `heal` undoes it.
Processes are signalled by pid (SIGKILL, SIGSTOP/SIGCONT) and restarted with their own arguments on
their own data directories, the way an operator or a supervisor would.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc

from quiver.local_cluster import LocalCluster, ServerProcess
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc
from tests.chaos.ledger import now
from tests.chaos.workload import COLLECTION


@dataclass
class FaultContext:
    cluster: LocalCluster
    router: router_pb2_grpc.RouterStub
    rng: random.Random
    kills: list[tuple[int, float]] = field(default_factory=list)  # (shard, when) for each killed primary

    def server(self, server_id: str) -> ServerProcess:
        return self.cluster.shard_servers[int(server_id.rsplit("-", 1)[1])]

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


FAULTS: tuple[Fault, ...] = (
    # Held past the servers' lease (2 s), so the controller promotes a replica before the old primary returns.
    Fault("kill_primary", True, _kill_primary, _start_again, hold_s=3.5),
    Fault("kill_follower", True, _kill_follower, _start_again),
    Fault("stop_replica", True, _stop_replica, _continue, hold_s=1.5),
    Fault("kill_during_snapshot", True, _kill_during_snapshot, _start_again, hold_s=0.5),
    Fault("kill_everything", False, _kill_everything, _start_all, hold_s=0.5),
    Fault("kill_etcd", False, _kill_etcd, _start_etcd, hold_s=1.5),
)
