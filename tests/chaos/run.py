"""One chaos run: a real cluster (etcd, 3 shard servers, a router, as `quiver up` starts them), a
replicated collection under a steady write, read and search load, N fault cycles, then a checker.

The checker, not the writer, decides what was lost: after every fault has healed and every replica is
back in sync, it reads every point back and compares with the ledger, and compares every replica of every
shard by digest. `run_chaos` returns the report; `failures(report)` lists what broke the pass criteria.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc
from quiver.wire.filters import metadata_from_proto
from tests.chaos.faults import FAULTS, FaultContext
from tests.chaos.ledger import Ledger, now, wall_clock
from tests.chaos.network import Network
from tests.chaos.workload import COLLECTION, DIM, Workload, vector_of

SHARDS = 2
REPLICATION = 3
SERVERS = 4  # one more than the replication factor: a lost server's replicas have somewhere to go
LEASE_TTL_S = "2"
REPLACE_AFTER_S = "6"  # past a killed server's restart, so only a lost server's replicas are rebuilt
SHARD_ARGS = (
    "--lease-ttl", LEASE_TTL_S, "--drain-delay", "0",
    # Frequent snapshots keep a restart's WAL replay short, and make followers catch up from snapshots too.
    "--snapshot-interval-s", "20", "--snapshot-after-wal-bytes", str(2 * 2**20),
)
RTO_TARGET_S = 5.0
SEARCH_TARGET = 0.999


async def converge(router: router_pb2_grpc.RouterStub, servers: int, timeout: float = 60.0) -> float:
    """Wait until every server is registered and every replica is in sync with its primary; seconds taken."""
    started = now()
    last = "no status yet"
    while now() - started < timeout:
        try:
            status = await router.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=5)
            replicas = [r for r in status.replicas if r.collection == COLLECTION]
            settled = (
                len(status.servers) == servers and len(replicas) == SHARDS * REPLICATION
                and all(r.role in ("primary", "in_sync") and r.state == "serving" and r.lag == 0 for r in replicas)
            )
            if settled:
                return now() - started
            last = str([(r.shard, r.server_id, r.role, r.state, r.lag) for r in replicas])
        except grpc.aio.AioRpcError as error:
            last = error.details() or ""
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the cluster did not converge within {timeout}s: {last}")


def _same_direction(stored: bytes, written: np.ndarray) -> bool:
    """The collection is cosine: a point is stored normalised."""
    return bool(np.allclose(np.frombuffer(stored, dtype="<f4"), written / np.linalg.norm(written), atol=1e-6))


async def check(router: router_pb2_grpc.RouterStub, ledger: Ledger) -> dict[str, Any]:
    """Everything acknowledged is there (the newest version at least), nothing definitely refused is, no
    point is held twice, and every replica of a shard has the same contents."""
    ids = sorted({w.point_id for w in ledger.writes})
    found: dict[str, tuple[int, bytes]] = {}
    for start in range(0, len(ids), 500):
        reply = await router.Get(router_pb2.RouterGetRequest(collection=COLLECTION, ids=ids[start:start + 500], include_vectors=True), timeout=30)
        for point in reply.points:
            found[point.id] = (int(metadata_from_proto(point.metadata)["v"]), point.vector)
    newest_acked: dict[str, int] = {}
    for write in ledger.acked():
        newest_acked[write.point_id] = max(newest_acked.get(write.point_id, 0), write.seq)
    lost = [f"{i} v{v}" for i, v in newest_acked.items() if i not in found or found[i][0] < v]
    refused = {w.seq for w in ledger.writes if w.outcome == "refused"}
    visible_refused = [f"{i} v{v}" for i, (v, _) in found.items() if v in refused]
    wrong_vector = [i for i, (v, vector) in found.items() if not _same_direction(vector, vector_of(v))]

    status = await router.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=5)
    digests: dict[int, dict[str, tuple[int, int]]] = {}
    for replica in status.replicas:
        if replica.collection != COLLECTION:
            continue
        async with grpc.aio.insecure_channel(replica.address) as channel:
            reply = await shard_pb2_grpc.ShardStub(channel).Digest(shard_pb2.DigestRequest(
                ref=shard_pb2.PartitionRef(collection=COLLECTION, shard=replica.shard, version=replica.version)), timeout=30)
        digests.setdefault(replica.shard, {})[replica.server_id] = (reply.point_count, reply.digest)
    diverged = {shard: d for shard, d in digests.items() if len(set(d.values())) != 1}
    held = sum(next(iter(d.values()))[0] for d in digests.values())
    # Every point in exactly one shard: the shards' counts add up to the distinct points the router finds.
    duplicates = held - len(found)
    search = await router.Search(router_pb2.RouterSearchRequest(collection=COLLECTION, queries=np.stack([vector_of(s) for s in range(1, 21)]).tobytes(), k=50), timeout=10)
    duplicate_results = sum(len(r.ids) - len(set(r.ids)) for r in search.results)
    return {
        "points": len(found), "lost": lost, "definitely_refused_but_visible": visible_refused,
        "wrong_vectors": wrong_vector, "replicas_diverged": {str(k): str(v) for k, v in diverged.items()},
        "duplicate_points": duplicates, "duplicate_results": duplicate_results,
    }


async def run_chaos(data_dir: Path, cycles: int, seed: int = 0, log: Any = print) -> dict[str, Any]:
    rng = random.Random(seed)
    ledger = Ledger()
    network = Network()
    cluster = LocalCluster(
        data_dir, shards=SERVERS, shard_args=SHARD_ARGS, router_args=("--replace-after-s", REPLACE_AFTER_S), advertise=network.address,
    )
    with contextlib.closing(network), cluster:
        for index, server in enumerate(cluster.shard_servers):
            network.connect(index, server)
        async with AsyncClient(cluster.router_address, timeout=30) as client:
            await client.create_collection(COLLECTION, DIM, index="hnsw", shards=SHARDS, replication_factor=REPLICATION)
        async with grpc.aio.insecure_channel(cluster.router_address) as channel:
            router = router_pb2_grpc.RouterStub(channel)
            workload = Workload(router, ledger, SHARDS)
            load = asyncio.ensure_future(workload.run())
            ctx = FaultContext(cluster, router, rng, network, servers_started=SERVERS)
            convergence: list[float] = []
            try:
                await asyncio.sleep(1.0)
                for cycle in range(cycles):
                    fault = FAULTS[cycle % len(FAULTS)]
                    started = now()
                    workload.fault = fault.name
                    hit = await fault.inject(ctx)
                    await asyncio.sleep(fault.hold_s)
                    await fault.heal(ctx, hit)
                    workload.fault = "healing"
                    convergence.append(await converge(router, len(cluster.shard_servers)))
                    workload.fault = "none"
                    ledger.faults.append({"cycle": cycle, "fault": fault.name, "seconds": round(now() - started, 2)})
                    log(f"cycle {cycle + 1}/{cycles}: {fault.name}, healed in {convergence[-1]:.1f} s; writes {ledger.by_outcome()}")
                await asyncio.sleep(0.5)
            finally:
                workload.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(load, 10)
            await converge(router, len(cluster.shard_servers))
            verdict = await check(router, ledger)
    recoveries = []
    kills = []
    for shard, killed_at in ctx.kills:
        acked_at = ledger.first_ack_after(shard, killed_at)
        recoveries.append(round(acked_at - killed_at, 2) if acked_at is not None else None)
        # Wall-clock time of each kill, to find it in the servers' and router's logs.
        kills.append({"shard": shard, "at": wall_clock(killed_at), "recovered_s": recoveries[-1]})
    one_replica = {f.name for f in FAULTS if f.one_replica}
    ok = sum(c[0] for f, c in ledger.searches.items() if f in one_replica)
    failed = sum(c[1] for f, c in ledger.searches.items() if f in one_replica)
    return {
        "cycles": cycles,
        "writes": ledger.by_outcome(),
        **verdict,
        "read_violations": ledger.read_violations[:20],
        "reads": {"ok": ledger.reads_ok, "failed": ledger.reads_failed},
        "searches_by_fault": {f: {"ok": c[0], "failed": c[1]} for f, c in sorted(ledger.searches.items())},
        "one_replica_search_success": ok / (ok + failed) if ok + failed else 1.0,
        # Why searches failed during one-replica faults (the others are expected to fail).
        "search_failures": [f for f in ledger.search_failures if f["fault"] in one_replica][:50],
        "primary_kill_to_next_ack_s": recoveries,
        "primary_kills": kills,
        "convergence_s": {"median": round(statistics.median(convergence), 2) if convergence else 0, "max": round(max(convergence, default=0), 2)},
        "fault_log": ledger.faults,
    }


def failures(report: dict[str, Any]) -> list[str]:
    """The pass criteria a report misses (empty: passed)."""
    missed = []
    for key in ("lost", "definitely_refused_but_visible", "wrong_vectors", "read_violations"):
        if report[key]:
            missed.append(f"{key}: {report[key][:5]}")
    if report["replicas_diverged"]:
        missed.append(f"replicas diverged: {report['replicas_diverged']}")
    if report["duplicate_points"] or report["duplicate_results"]:
        missed.append(f"duplicates: {report['duplicate_points']} points, {report['duplicate_results']} in results")
    if report["one_replica_search_success"] < SEARCH_TARGET:
        missed.append(f"searches during one-replica faults {report['one_replica_search_success']:.4f} < {SEARCH_TARGET}")
    slow = [r for r in report["primary_kill_to_next_ack_s"] if r is None or r > RTO_TARGET_S]
    if slow:
        missed.append(f"primary kill to next acknowledged write over {RTO_TARGET_S} s: {report['primary_kill_to_next_ack_s']}")
    if not report["writes"].get("acked"):
        missed.append("no write was acknowledged")
    return missed
