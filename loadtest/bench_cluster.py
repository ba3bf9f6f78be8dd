"""Raw in-process index vs one shard over gRPC vs router + N shards, on the same GloVe-50 data, in one run.

    python -m loadtest.bench_cluster [--n-base N] [--shards 3] [--duration 10] [--py-spy DIR]

Index: HNSW, cosine, m=16, ef_construction=200; ef_search is tuned first on the raw index (the smallest
candidate reaching --target-recall recall@10) and then used everywhere (the shard's and the collection's
default ef). For each of the three paths: recall@10, closed-loop single-query latency p50/p99 and QPS at
concurrency 1 and 8 (C asyncio tasks over ONE shared channel; for the raw index, C threads), and QPS for
batches of 64 queries at concurrency 1.

Then where a routed query's time goes, at concurrency 1 (p50s):
- an empty round trip (grpc.health.v1 Check) to the router and to a shard: the per-hop cost;
- a direct search of one cluster shard (1/N of the data): the shard's service time plus one hop;
- the same search sent by the client to all N shards at once (one channel per shard, like the router):
  what the router's fan-out waits for;
- the routed search itself; router total - router hop - fan-out = the router's own work;
and the CPU each process spends per query while the router is loaded (from /proc).

Run by hand, not by the tests. Tables go to stderr, the JSON report to stdout. Everything (client,
router, shards, etcd) shares this machine's cores: on a small machine the concurrency-8 figures measure
CPU contention as much as anything.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.bench_common import (
    GRPC_OPTIONS,
    K,
    PGVECTOR_P50_MS,
    PGVECTOR_QPS_SINGLE_CLIENT,
    CpuMeter,
    Run,
    build_in_process,
    emit_json,
    ids_to_rows,
    log,
    machine,
    normalized,
    packed,
    pid_of,
    print_py_spy,
    print_table,
    py_spy,
    py_spy_summary,
    ratio,
    row_ids,
    run_closed_loop,
    run_closed_loop_threads,
    run_main,
    running,
    search_labels,
)
from loadtest.datasets import Dataset, load_glove50, recall_at_k
from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster, ServerProcess, free_port
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc, types_pb2
from quiver.wire.specs import index_to_proto
from shard.indexes import QueryKnobs

BATCH_QUERIES = 64
RECALL_BATCH = 500
UPSERT_BATCH = 1000
COLLECTION = "bench"
EF_CANDIDATES = "16,24,32,48,64,96,128,192,256,384,512"
HEALTH = health_pb2.HealthCheckRequest(service="")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-base", type=int, default=None, help="base vectors (default: all 390,000)")
    parser.add_argument("--n-queries", type=int, default=10_000, help="held-out queries (recall is over all of them)")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded calls before each phase")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--target-recall", type=float, default=0.95, help="raw-index recall@10 the ef tuning aims for")
    parser.add_argument("--ef-candidates", default=EF_CANDIDATES, help="ef_search values tried, smallest first")
    parser.add_argument("--ef", type=int, default=0, help="use this ef_search and skip the tuning")
    parser.add_argument("--concurrency", default="1,8", help="closed-loop concurrencies for single queries")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="profile the router and shard 0 during the routed runs (needs py-spy)")
    return parser.parse_args()


# -- raw in-process index ---------------------------------------------------------------------------


def tune_ef(index: Any, queries: np.ndarray, truth: np.ndarray, target: float, candidates: list[int]) -> tuple[int, list[dict[str, float]]]:
    sweep = []
    for ef in candidates:
        start = time.perf_counter()
        recall = recall_at_k(search_labels(index, queries, QueryKnobs(ef_search=ef)), truth, K)
        sweep.append({"ef": ef, "recall_at_10": recall, "batch_qps": round(len(queries) / (time.perf_counter() - start), 1)})
        log(f"raw: ef={ef} recall@10={recall:.4f}")
        if recall >= target:
            return ef, sweep
    log(f"raw: no candidate reached recall {target}; using the largest")
    return candidates[-1], sweep


def raw_side(data: Dataset, base: np.ndarray, queries: np.ndarray, args: argparse.Namespace, levels: list[int]) -> tuple[int, dict[str, Any]]:
    params = {"m": args.m, "ef_construction": args.ef_construction}
    log(f"raw: building hnsw {params} over {len(base):,} vectors")
    index, add_s = build_in_process("hnsw", params, base, UPSERT_BATCH)
    out: dict[str, Any] = {"insert": {"seconds": round(add_s, 3), "vectors_per_s": round(len(base) / add_s, 1)}}
    if args.ef:
        ef = args.ef
    else:
        ef, out["ef_sweep"] = tune_ef(index, queries, data.ground_truth, args.target_recall, [int(x) for x in args.ef_candidates.split(",")])
    knobs = QueryKnobs(ef_search=ef)
    out["recall_at_10"] = recall_at_k(search_labels(index, queries, knobs), data.ground_truth, K)
    single = [queries[i : i + 1] for i in range(len(queries))]
    batches = [queries[i : i + BATCH_QUERIES] for i in range(0, len(queries) - BATCH_QUERIES + 1, BATCH_QUERIES)]
    for c in levels:
        log(f"raw: single queries, {c} thread(s), {args.duration}s")
        out[f"single_c{c}"] = _with_cpu({"process": os.getpid()}, lambda: run_closed_loop_threads(
            lambda i: index.search(single[i % len(single)], K, knobs, None), c, args.duration, warmup=args.warmup))
    log(f"raw: batches of {BATCH_QUERIES}, 1 thread, {args.duration}s")
    out["batch64_c1"] = _with_cpu({"process": os.getpid()}, lambda: run_closed_loop_threads(
        lambda i: index.search(batches[i % len(batches)], K, knobs, None), 1, args.duration, warmup=args.warmup, queries_per_call=BATCH_QUERIES))
    return ef, out


def _with_cpu(pids: dict[str, int], measure: Any) -> dict[str, Any]:
    cpu = CpuMeter(pids).start()
    run: Run = measure()
    cpu.stop()
    return run.summary() | {"cpu_ms_per_query": cpu.per_query_ms(run.calls * run.queries_per_call)}


async def _with_cpu_async(pids: dict[str, int], measure: Any) -> dict[str, Any]:
    cpu = CpuMeter(pids).start()
    run: Run = await measure()
    cpu.stop()
    return run.summary() | {"cpu_ms_per_query": cpu.per_query_ms(run.calls * run.queries_per_call)}


# -- one shard, direct ------------------------------------------------------------------------------


def single_requests(make: Any, queries: np.ndarray) -> tuple[list[Any], list[Any]]:
    """Prebuilt requests (so the client spends little CPU): one per query, and one per 64 queries."""
    single = [make(packed(queries[i : i + 1])) for i in range(len(queries))]
    batches = [make(packed(queries[i : i + BATCH_QUERIES])) for i in range(0, len(queries) - BATCH_QUERIES + 1, BATCH_QUERIES)]
    return single, batches


async def search_phases(name: str, search: Any, single: list[Any], batches: list[Any], pids: dict[str, int], args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in levels:
        log(f"{name}: single queries, concurrency {c}, {args.duration}s")
        out[f"single_c{c}"] = await _with_cpu_async(pids, lambda c=c: run_closed_loop(lambda i: search(single[i % len(single)]), c, args.duration, warmup=args.warmup))
    log(f"{name}: batches of {BATCH_QUERIES}, concurrency 1, {args.duration}s")
    out["batch64_c1"] = await _with_cpu_async(pids, lambda: run_closed_loop(
        lambda i: search(batches[i % len(batches)]), 1, args.duration, warmup=args.warmup, queries_per_call=BATCH_QUERIES))
    return out


async def health_rtt(channel: grpc.aio.Channel, args: argparse.Namespace) -> dict[str, Any]:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await run_closed_loop(lambda i: stub.Check(HEALTH), 1, args.duration, warmup=args.warmup)).summary()


async def shard_side(address: str, pid: int, data: Dataset, ef: int, args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    n, dim = data.base.shape
    ref = shard_pb2.PartitionRef(collection=COLLECTION, shard=0, version=1)
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        index = index_to_proto("hnsw", {"m": args.m, "ef_construction": args.ef_construction, "ef_search": ef})
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=shard_pb2.PartitionSpec(ref=ref, dim=dim, metric=types_pb2.COSINE, index=index)))
        log(f"shard: upserting {n:,} vectors in batches of {UPSERT_BATCH}")
        start = time.perf_counter()
        for s in range(0, n, UPSERT_BATCH):
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref, ids=row_ids(s, min(s + UPSERT_BATCH, n)), vectors=packed(data.base[s : s + UPSERT_BATCH])))
        insert_s = time.perf_counter() - start
        out["insert"] = {"seconds": round(insert_s, 3), "vectors_per_s": round(n / insert_s, 1)}
        found = []
        for s in range(0, len(data.queries), RECALL_BATCH):
            found.extend((await stub.Search(shard_pb2.SearchRequest(ref=ref, queries=packed(data.queries[s : s + RECALL_BATCH]), k=K))).results)
        out["recall_at_10"] = recall_at_k(ids_to_rows(found), data.ground_truth, K)
        log(f"shard: health round trip, {args.duration}s")
        out["health_rtt"] = await health_rtt(channel, args)
        single, batches = single_requests(lambda q: shard_pb2.SearchRequest(ref=ref, queries=q, k=K), data.queries)
        out |= await search_phases("shard", stub.Search, single, batches, {"shard": pid, "client": os.getpid()}, args, levels)
    return out


# -- router + N shards ------------------------------------------------------------------------------


async def cluster_side(cluster: LocalCluster, data: Dataset, ef: int, args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    n = len(data.base)
    out: dict[str, Any] = {}
    assert cluster.router is not None
    pids = {"router": pid_of(cluster.router)} | {f"shard{i}": pid_of(s) for i, s in enumerate(cluster.shard_servers)} | {"client": os.getpid()}
    async with AsyncClient(cluster.router_address, timeout=300) as client:
        params = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": ef}
        await client.create_collection(COLLECTION, data.dim, metric="cosine", index="hnsw", index_params=params, shards=args.shards)
        log(f"router: upserting {n:,} vectors in batches of {UPSERT_BATCH}")
        start = time.perf_counter()
        await client.upsert(COLLECTION, row_ids(0, n), data.base, batch_size=UPSERT_BATCH)
        insert_s = time.perf_counter() - start
        out["insert"] = {"seconds": round(insert_s, 3), "vectors_per_s": round(n / insert_s, 1)}
        status = await client.status()
        out["points_per_shard"] = sorted(r.point_count for r in status.replicas if r.collection == COLLECTION)

    # Which server holds which shard of the collection, from the shards themselves.
    shard_refs: dict[int, tuple[str, shard_pb2.PartitionRef]] = {}
    channels = {s.address: grpc.aio.insecure_channel(s.address, options=GRPC_OPTIONS) for s in cluster.shard_servers}
    router_channel = grpc.aio.insecure_channel(cluster.router_address, options=GRPC_OPTIONS)
    try:
        for address, channel in channels.items():
            listed = await shard_pb2_grpc.ShardStub(channel).ListPartitions(shard_pb2.ListPartitionsRequest())
            for spec in listed.partitions:
                if spec.ref.collection == COLLECTION:
                    shard_refs[spec.ref.shard] = (address, spec.ref)
        router = router_pb2_grpc.RouterStub(router_channel)
        found = []
        for s in range(0, len(data.queries), RECALL_BATCH):
            request = router_pb2.RouterSearchRequest(collection=COLLECTION, queries=packed(data.queries[s : s + RECALL_BATCH]), k=K)
            found.extend((await router.Search(request, timeout=300)).results)
        out["recall_at_10"] = recall_at_k(ids_to_rows(found), data.ground_truth, K)

        # Breakdown pieces, concurrency 1.
        log(f"router: health round trip to the router and to shard 0, {args.duration}s each")
        out["health_rtt_router"] = await health_rtt(router_channel, args)
        address0, ref0 = shard_refs[0]
        out["health_rtt_shard"] = await health_rtt(channels[address0], args)
        direct0 = [shard_pb2.SearchRequest(ref=ref0, queries=packed(data.queries[i : i + 1]), k=K) for i in range(len(data.queries))]
        stub0 = shard_pb2_grpc.ShardStub(channels[address0])
        log(f"router: direct search of shard 0 ({out['points_per_shard']} points per shard), {args.duration}s")
        out["direct_shard0_c1"] = await _with_cpu_async(pids, lambda: run_closed_loop(lambda i: stub0.Search(direct0[i % len(direct0)]), 1, args.duration, warmup=args.warmup))
        fan = [
            (shard_pb2_grpc.ShardStub(channels[address]), [shard_pb2.SearchRequest(ref=ref, queries=packed(data.queries[i : i + 1]), k=K) for i in range(len(data.queries))])
            for address, ref in (shard_refs[s] for s in sorted(shard_refs))
        ]
        log(f"router: client-side fan-out to all {len(fan)} shards, {args.duration}s")
        out["client_fanout_c1"] = await _with_cpu_async(pids, lambda: run_closed_loop(
            lambda i: asyncio.gather(*(stub.Search(reqs[i % len(reqs)]) for stub, reqs in fan)), 1, args.duration, warmup=args.warmup))

        single, batches = single_requests(lambda q: router_pb2.RouterSearchRequest(collection=COLLECTION, queries=q, k=K), data.queries)
        out |= await search_phases("router", router.Search, single, batches, pids, args, [c for c in levels if c != max(levels)])
        top = max(levels)
        log(f"router: single queries, concurrency {top}, {args.duration}s" + (" (py-spy on router and shard 0)" if args.py_spy else ""))
        seconds = args.warmup + args.duration
        if args.py_spy:
            shard0_pid = next(pid_of(s) for s in cluster.shard_servers if s.address == address0)
            with py_spy(pids["router"], args.py_spy / f"router-c{top}.txt", seconds) as router_profile, py_spy(shard0_pid, args.py_spy / f"shard0-c{top}.txt", seconds) as shard_profile:
                out[f"single_c{top}"] = await _with_cpu_async(pids, lambda: run_closed_loop(lambda i: router.Search(single[i % len(single)]), top, args.duration, warmup=args.warmup))
            out["py_spy"] = {"router": py_spy_summary(router_profile), "shard0": py_spy_summary(shard_profile)}
        else:
            out[f"single_c{top}"] = await _with_cpu_async(pids, lambda: run_closed_loop(lambda i: router.Search(single[i % len(single)]), top, args.duration, warmup=args.warmup))
    finally:
        await router_channel.close()
        for channel in channels.values():
            await channel.close()
    return out


# -- report -----------------------------------------------------------------------------------------


def breakdown(cluster: dict[str, Any]) -> list[tuple[str, float]]:
    router_hop = cluster["health_rtt_router"]["p50_ms"]
    shard_hop = cluster["health_rtt_shard"]["p50_ms"]
    direct = cluster["direct_shard0_c1"]["p50_ms"]
    fanout = cluster["client_fanout_c1"]["p50_ms"]
    total = cluster["single_c1"]["p50_ms"]
    return [
        ("client<->router hop (Health RTT to router)", router_hop),
        ("router<->shard hop (Health RTT to a shard)", shard_hop),
        ("shard service time (direct search - hop)", direct - shard_hop),
        ("direct search of one shard (hop + service)", direct),
        ("fan-out wait: all shards at once (client gather)", fanout),
        ("router's own work (total - router hop - fan-out)", total - router_hop - fanout),
        ("router total (routed search, c=1)", total),
    ]


def report_tables(report: dict[str, Any], levels: list[int]) -> None:
    top = max(levels)
    headers = ["path", "recall@10"]
    for c in levels:
        headers += [f"p50 ms c{c}", f"p99 ms c{c}", f"QPS c{c}"]
    headers += ["QPS batch64"]
    rows = []
    for label, key in (("raw in-process index", "raw"), ("1 shard over gRPC", "shard"), (f"router + {report['shards']} shards", "cluster")):
        side = report[key]
        row: list[Any] = [label, side["recall_at_10"]]
        for c in levels:
            row += [side[f"single_c{c}"]["p50_ms"], side[f"single_c{c}"]["p99_ms"], side[f"single_c{c}"]["qps"]]
        rows.append(row + [side["batch64_c1"]["qps"]])
    raw = report["raw"]
    for label, key in (("  shard / raw", "shard"), ("  router / raw", "cluster")):
        side = report[key]
        row = [label, ratio(side["recall_at_10"], raw["recall_at_10"])]
        for c in levels:
            row += [ratio(side[f"single_c{c}"][m], raw[f"single_c{c}"][m]) for m in ("p50_ms", "p99_ms", "qps")]
        rows.append(row + [ratio(side["batch64_c1"]["qps"], raw["batch64_c1"]["qps"])])
    print_table(
        f"bench_cluster: {report['dataset']} n={report['n_base']:,} hnsw m={report['m']} ef_construction={report['ef_construction']} "
        f"ef_search={report['ef_search']} ({report['duration_s']}s per phase, {report['machine']['cpus']} CPUs)",
        headers, rows,
        note="c = closed-loop concurrency (raw: threads; gRPC: asyncio tasks on one channel). QPS counts queries.",
    )
    cluster = report["cluster"]
    total = cluster["single_c1"]["p50_ms"]
    print_table("where a routed query's time goes (p50 at concurrency 1, ms)", ["piece", "ms", "share of total"],
                [[name, ms, ratio(ms, total)] for name, ms in report["router_breakdown_ms"].items()],
                note="Hops are estimated by the cheapest RPC (grpc health Check); shares of overlapping pieces do not add up.")
    rows = []
    for phase in ("single_c1", f"single_c{top}", "batch64_c1"):
        rows.append([f"router {phase}", *[cluster[phase]["cpu_ms_per_query"].get(p) for p in ("client", "router")], sum(v for k, v in cluster[phase]["cpu_ms_per_query"].items() if k.startswith("shard"))])
    for phase in ("direct_shard0_c1", "client_fanout_c1"):
        rows.append([phase, cluster[phase]["cpu_ms_per_query"]["client"], cluster[phase]["cpu_ms_per_query"]["router"], sum(v for k, v in cluster[phase]["cpu_ms_per_query"].items() if k.startswith("shard"))])
    for phase in ("single_c1", f"single_c{top}", "batch64_c1"):
        rows.append([f"1 shard {phase}", report["shard"][phase]["cpu_ms_per_query"]["client"], None, report["shard"][phase]["cpu_ms_per_query"]["shard"]])
        rows.append([f"raw {phase}", None, None, report["raw"][phase]["cpu_ms_per_query"]["process"]])
    print_table("CPU ms per query, by process", ["phase", "client", "router", "shards (sum)"], rows)
    ref = report["pgvector_reference"]
    print_table("pgvector reference (from the issue)", ["figure", "pgvector", "router", "router / pgvector"], [
        ["p50 ms, one client (c1)", PGVECTOR_P50_MS, total, ref["router_p50_c1_over_pgvector"]],
        ["QPS, one client (c1)", PGVECTOR_QPS_SINGLE_CLIENT, cluster["single_c1"]["qps"], ref["router_qps_c1_over_pgvector"]],
        [f"QPS c{top} vs 2 x pgvector single-client", 2 * PGVECTOR_QPS_SINGLE_CLIENT, cluster[f"single_c{top}"]["qps"], ref[f"router_qps_c{top}_over_2x_pgvector"]],
    ])
    for name in ("router", "shard0"):
        print_py_spy(f"{name} during routed c{top}", (cluster.get("py_spy") or {}).get(name))


def main() -> None:
    args = parse_args()
    levels = sorted({1} | {int(x) for x in args.concurrency.split(",")})  # c=1 feeds the breakdown
    log(f"loading GloVe-50 (n_base={args.n_base or 'all'}, {args.n_queries} queries)")
    data = load_glove50(n_base=args.n_base, n_queries=args.n_queries, gt_k=100)
    base, queries = normalized(data.base), normalized(data.queries)
    report: dict[str, Any] = {
        "bench": "cluster",
        "dataset": data.name,
        "n_base": len(data.base),
        "n_queries": len(data.queries),
        "shards": args.shards,
        "m": args.m,
        "ef_construction": args.ef_construction,
        "duration_s": args.duration,
        "machine": machine(),
    }
    ef, report["raw"] = raw_side(data, base, queries, args, levels)
    report["ef_search"] = ef
    with tempfile.TemporaryDirectory(prefix="quiver-bench-cluster-") as tmp:
        shard = ServerProcess(["-m", "shard", "--data-dir", str(Path(tmp) / "single"), "--port", str(free_port())], Path(tmp) / "single.log")
        with running(shard):
            log(f"single shard pid {pid_of(shard)} serving on {shard.address}")
            report["shard"] = uvloop.run(shard_side(shard.address, pid_of(shard), data, ef, args, levels))
            log("stopping the single shard (it snapshots on SIGTERM)")
        log(f"starting etcd, {args.shards} shards and a router")
        with LocalCluster(Path(tmp) / "cluster", shards=args.shards) as cluster:
            report["cluster"] = uvloop.run(cluster_side(cluster, data, ef, args, levels))
            log("stopping the cluster")
    cluster = report["cluster"]
    top = max(levels)
    report["router_breakdown_ms"] = {name: round(ms, 4) for name, ms in breakdown(cluster)}
    report["pgvector_reference"] = {
        "pgvector_p50_ms": PGVECTOR_P50_MS,
        "pgvector_qps_single_client": PGVECTOR_QPS_SINGLE_CLIENT,
        "router_p50_c1_over_pgvector": ratio(cluster["single_c1"]["p50_ms"], PGVECTOR_P50_MS),
        "router_qps_c1_over_pgvector": ratio(cluster["single_c1"]["qps"], PGVECTOR_QPS_SINGLE_CLIENT),
        f"router_qps_c{top}_over_2x_pgvector": ratio(cluster[f"single_c{top}"]["qps"], 2 * PGVECTOR_QPS_SINGLE_CLIENT),
        "note": "pgvector figures are the issue's, measured elsewhere; only the ratios' direction is meaningful across machines",
    }
    report_tables(report, levels)
    emit_json(report)


if __name__ == "__main__":
    run_main(main)
