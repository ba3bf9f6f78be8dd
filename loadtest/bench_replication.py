"""What replication costs and buys, on one cluster in one run (GloVe-50, cosine, HNSW m=16 efc=200):

    python -m loadtest.bench_replication [--n-base 20000] [--duration 5]

1. Write throughput through the router at replication factor 1, 2 and 3 (one shard each, on a cluster of
   three shard servers): upserts of 256 vectors, 4 concurrent callers, closed loop. Each write is durable
   on every in-sync replica before it is acknowledged, so rf 2 and 3 pay a second WAL fsync and a hop.
2. Search latency of an rf-2 collection with one replica stalled (SIGSTOP, inside its lease so it stays
   "live"), 4 concurrent callers, 200 ms deadline, through a router with hedging on and one with it off;
   both first measured with no stall. Hedging sends a read to the other replica when the first is slower
   than its recent p95, at most 5% extra reads; without it a read waits for its share of the deadline.

Tables go to stderr, the JSON report to stdout. Client, router and shards share this machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from loadtest.bench_common import emit_json, log, machine, print_table, ratio, run_closed_loop, run_main, running
from loadtest.datasets import load_glove50
from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster, ServerProcess, free_port
from quiver.v1 import router_pb2, router_pb2_grpc

HNSW = {"m": 16, "ef_construction": 200, "ef_search": 64}
BATCH = 256
WRITERS = 4
SEARCHERS = 4
DEADLINE_S = 0.2


def _metric(address: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


async def write_throughput(router: str, base: np.ndarray, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncClient(router, timeout=60) as client:
        for rf in (1, 2, 3):
            name = f"rf{rf}"
            await client.create_collection(name, base.shape[1], index="hnsw", index_params=HNSW, shards=1, replication_factor=rf)
            next_id = [0]

            async def upsert(n: int, name: str = name) -> None:
                start = (n * BATCH) % (len(base) - BATCH)
                first = next_id[0]
                next_id[0] += BATCH
                await client.upsert(name, [f"p{first + i}" for i in range(BATCH)], base[start:start + BATCH])

            run = await run_closed_loop(upsert, WRITERS, duration, warmup=0.5, queries_per_call=BATCH)
            out[name] = {**run.summary(), "points_per_s": round(run.qps, 1)}
            log(f"rf {rf}: {run.qps:,.0f} points/s, batch p50 {run.percentile_ms(50):.1f} ms p99 {run.percentile_ms(99):.1f} ms")
            await client.drop_collection(name)
    return out


async def stalled_search(cluster: LocalCluster, routers: dict[str, ServerProcess], base: np.ndarray, queries: np.ndarray, duration: float) -> dict[str, Any]:
    async with AsyncClient(cluster.router_address, timeout=60) as client:
        await client.create_collection("hedge", base.shape[1], index="hnsw", index_params=HNSW, shards=1, replication_factor=2)
        for start in range(0, len(base), 2000):
            await client.upsert("hedge", [f"p{i}" for i in range(start, min(start + 2000, len(base)))], base[start:start + 2000])
        status = await client.status()
    replicas = [r for r in status.replicas if r.collection == "hedge"]
    follower = next(r for r in replicas if r.role != "primary")
    stalled = cluster.shard_servers[int(follower.server_id.rsplit("-", 1)[1])]
    out: dict[str, Any] = {}
    for label, router in routers.items():
        async with grpc.aio.insecure_channel(router.address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            failures = [0]
            codes: dict[str, int] = {}

            async def search(n: int) -> None:
                request = router_pb2.RouterSearchRequest(collection="hedge", queries=queries[n % len(queries)].tobytes(), k=10)
                try:
                    await stub.Search(request, timeout=DEADLINE_S)
                except grpc.aio.AioRpcError as error:
                    failures[0] += 1
                    codes[error.code().name] = codes.get(error.code().name, 0) + 1
                    if os.environ.get("BENCH_DEBUG"):
                        log(f"{error.code().name}: {error.details()}")

            for stall in (False, True):
                failures[0] = 0
                codes.clear()
                hedges_before = _metric(router.metrics_address, "quiver_router_hedged_reads_total")
                reads_before = _metric(router.metrics_address, "quiver_router_shard_call_duration_seconds_count")
                assert stalled.process is not None
                if stall:
                    os.kill(stalled.process.pid, signal.SIGSTOP)
                try:
                    run = await run_closed_loop(search, SEARCHERS, duration, warmup=0.5)
                finally:
                    if stall:
                        os.kill(stalled.process.pid, signal.SIGCONT)
                hedges = _metric(router.metrics_address, "quiver_router_hedged_reads_total") - hedges_before
                calls = _metric(router.metrics_address, "quiver_router_shard_call_duration_seconds_count") - reads_before
                key = f"{label}, {'one replica stalled' if stall else 'no stall'}"
                out[key] = {
                    **run.summary(), "failed": failures[0], "failures_by_code": dict(codes),
                    "success": round(1 - failures[0] / max(run.calls, 1), 5),
                    "hedged_reads": hedges, "extra_reads_share": round(hedges / max(calls - hedges, 1), 4),
                }
                log(f"{key}: p50 {run.percentile_ms(50):.1f} ms p99 {run.percentile_ms(99):.1f} ms, {failures[0]} of {run.calls} failed {codes}, {hedges:.0f} hedges")
                await asyncio.sleep(2.0)  # the stalled replica's record decays before the next round
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-base", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    data = load_glove50(n_base=args.n_base, n_queries=500, gt_k=10)
    base = np.ascontiguousarray(data.base, dtype="<f4")
    queries = np.ascontiguousarray(data.queries, dtype="<f4")
    with tempfile.TemporaryDirectory(prefix="quiver-bench-replication-") as tmp:
        # A long lease: the stalled replica stays registered, so what is measured is a slow replica, not a gone one.
        cluster = LocalCluster(Path(tmp), shards=3, shard_args=("--lease-ttl", "30"),
                               router_args=("--metrics-port", str(free_port())))
        with cluster:
            unhedged = ServerProcess(
                ["-m", "router", "--etcd", cluster.etcd.endpoint, "--port", str(free_port()), "--no-hedge", "--no-controller",
                 "--metrics-port", str(free_port())],
                Path(tmp) / "logs" / "router-unhedged.log",
            )
            with running(unhedged):
                writes = asyncio.run(write_throughput(cluster.router_address, base, args.duration))
                assert cluster.router is not None
                searches = asyncio.run(stalled_search(cluster, {"hedging on": cluster.router, "hedging off": unhedged}, base, queries, args.duration))
    rf1 = writes["rf1"]["points_per_s"]
    print_table(
        "Write throughput through the router (one shard, 256-vector upserts, 4 callers)",
        ["replication", "points/s", "vs rf 1", "batch p50 ms", "batch p99 ms"],
        [[name, w["points_per_s"], ratio(w["points_per_s"], rf1), w["p50_ms"], w["p99_ms"]] for name, w in writes.items()],
    )
    print_table(
        f"Search, rf 2, {SEARCHERS} callers, {DEADLINE_S * 1e3:.0f} ms deadline",
        ["router, replica", "p50 ms", "p99 ms", "QPS", "success", "hedges", "extra reads"],
        [[k, s["p50_ms"], s["p99_ms"], s["qps"], s["success"], s["hedged_reads"], s["extra_reads_share"]] for k, s in searches.items()],
    )
    emit_json({"benchmark": "replication", "machine": machine(), "n_base": args.n_base, "duration_s": args.duration,
               "writes": writes, "searches": searches})


if __name__ == "__main__":
    run_main(main)
