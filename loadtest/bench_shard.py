"""One shard server over gRPC against the same index in-process, on the same GloVe-50 data, in one run.

    python -m loadtest.bench_shard [--n-base N] [--index hnsw|ivf_pq|flat] [--params m=16,ef_search=128]
                                   [--duration 10]

The shard is a real `python -m shard` process on loopback, called through `ShardStub` over grpc.aio
(uvloop). The in-process side is the shard's own adapter (`shard.indexes.create_index`) with the same
parameters, fed the same cosine-normalised vectors in the same batches. Reported for both, with the
ratio gRPC / in-process: recall@10 against exact ground truth, closed-loop QPS and p50/p99 latency for
single queries and for batches of 64 (concurrency 1), insert throughput, and bytes of memory per vector
(the shard's own Stats estimate, and the process RSS growth while loading).

Run by hand, not by the tests. Tables go to stderr, the JSON report to stdout. The client and the shard
share this machine's cores, so the gRPC figures include the client's own CPU cost.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop

from loadtest.bench_common import (
    GRPC_OPTIONS,
    K,
    CpuMeter,
    build_in_process,
    emit_json,
    ids_to_rows,
    log,
    machine,
    normalized,
    packed,
    parse_params,
    pid_of,
    print_py_spy,
    print_table,
    py_spy,
    py_spy_summary,
    ratio,
    row_ids,
    rss_bytes,
    run_closed_loop,
    run_closed_loop_threads,
    run_main,
    running,
    search_labels,
)
from loadtest.datasets import Dataset, load_glove50, recall_at_k
from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import shard_pb2, shard_pb2_grpc, types_pb2
from quiver.wire.specs import index_to_proto
from shard.indexes import QueryKnobs

DEFAULT_PARAMS = {"hnsw": "m=16,ef_construction=200,ef_search=128", "ivf_pq": "", "flat": ""}
BATCH_QUERIES = 64
RECALL_BATCH = 500
REF = shard_pb2.PartitionRef(collection="bench", shard=0, version=1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_shard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-base", type=int, default=None, help="base vectors (default: all 390,000)")
    parser.add_argument("--n-queries", type=int, default=10_000, help="held-out queries (recall is over all of them)")
    parser.add_argument("--index", choices=("hnsw", "ivf_pq", "flat"), default="hnsw")
    parser.add_argument("--params", default=None, help=f"index parameters, name=value,... (hnsw default: {DEFAULT_PARAMS['hnsw']})")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded calls before each phase")
    parser.add_argument("--upsert-batch", type=int, default=1000)
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="profile the shard during the gRPC query phases (needs py-spy)")
    return parser.parse_args()


async def grpc_side(address: str, pid: int, data: Dataset, kind: str, params: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    n, dim = data.base.shape
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        spec = shard_pb2.PartitionSpec(ref=REF, dim=dim, metric=types_pb2.COSINE, index=index_to_proto(kind, params))
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec))

        log(f"gRPC: upserting {n:,} vectors in batches of {args.upsert_batch}")
        requests = [
            shard_pb2.UpsertRequest(ref=REF, ids=row_ids(s, min(s + args.upsert_batch, n)), vectors=packed(data.base[s : s + args.upsert_batch]))
            for s in range(0, n, args.upsert_batch)
        ]
        rss_before = rss_bytes(pid)
        start = time.perf_counter()
        for request in requests:
            await stub.Upsert(request)
        insert_s = time.perf_counter() - start
        rss_after = rss_bytes(pid)
        del requests

        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=REF))).partitions[0]
        if not stats.trained:
            log("gRPC: training (ivf_pq below train_size)")
            await stub.Train(shard_pb2.TrainRequest(ref=REF))
            stats = (await stub.Stats(shard_pb2.StatsRequest(ref=REF))).partitions[0]
        out["insert"] = {"seconds": round(insert_s, 3), "vectors_per_s": round(n / insert_s, 1)}
        out["memory"] = {
            "stats_index_bytes_per_vector": stats.index_memory_bytes / stats.point_count,
            "stats_index_plus_metadata_bytes_per_vector": (stats.index_memory_bytes + stats.metadata_memory_bytes) / stats.point_count,
            "rss_delta_bytes_per_vector": (rss_after - rss_before) / n,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "point_count": stats.point_count,
        }
        out["effective_params"] = stats.index_params_json

        found = []
        for s in range(0, len(data.queries), RECALL_BATCH):
            response = await stub.Search(shard_pb2.SearchRequest(ref=REF, queries=packed(data.queries[s : s + RECALL_BATCH]), k=K))
            found.extend(response.results)
        out["recall_at_10"] = recall_at_k(ids_to_rows(found), data.ground_truth, K)
    return out


async def grpc_latency(address: str, pid: int, data: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """Query phases over one channel; requests are built beforehand so the client costs little CPU."""
    nq = len(data.queries)
    single = [shard_pb2.SearchRequest(ref=REF, queries=packed(data.queries[i : i + 1]), k=K) for i in range(nq)]
    batches = [
        shard_pb2.SearchRequest(ref=REF, queries=packed(data.queries[i : i + BATCH_QUERIES]), k=K)
        for i in range(0, nq - BATCH_QUERIES + 1, BATCH_QUERIES)
    ]
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        await stub.Stats(shard_pb2.StatsRequest(ref=REF))  # connect before timing
        for name, reqs, per_call in (("single", single, 1), ("batch64", batches, BATCH_QUERIES)):
            log(f"gRPC: {name} queries, concurrency 1, {args.duration}s")
            with contextlib.ExitStack() as stack:
                profile = stack.enter_context(py_spy(pid, args.py_spy / f"shard-{name}.txt", args.warmup + args.duration)) if args.py_spy else None
                cpu = CpuMeter({"shard": pid, "client": os.getpid()}).start()
                run = await run_closed_loop(lambda i, reqs=reqs: stub.Search(reqs[i % len(reqs)]), 1, args.duration, warmup=args.warmup, queries_per_call=per_call)
                cpu.stop()
            out[name] = run.summary() | {"cpu_ms_per_query": cpu.per_query_ms(run.calls * per_call)}
            if profile is not None:
                out[name]["py_spy"] = py_spy_summary(profile)
    return out


def in_process_side(data: Dataset, base: np.ndarray, queries: np.ndarray, kind: str, params: dict[str, int], args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    n = len(base)
    log(f"in-process: adding {n:,} vectors in batches of {args.upsert_batch}")
    rss_before = rss_bytes()
    index, add_s = build_in_process(kind, params, base, args.upsert_batch)
    rss_after = rss_bytes()
    if not index.trained:
        log("in-process: training (ivf_pq below train_size)")
        index.train(None)
    out: dict[str, Any] = {
        "insert": {"seconds": round(add_s, 3), "vectors_per_s": round(n / add_s, 1)},
        "memory": {
            "index_memory_bytes_per_vector": index.memory_bytes() / n,
            "rss_delta_bytes_per_vector": (rss_after - rss_before) / n,
        },
        "effective_params": index.effective_params(),
        "recall_at_10": recall_at_k(search_labels(index, queries, QueryKnobs()), data.ground_truth, K),
    }
    return index, out


def in_process_latency(index: Any, queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    knobs = QueryKnobs()
    single = [queries[i : i + 1] for i in range(len(queries))]
    batches = [queries[i : i + BATCH_QUERIES] for i in range(0, len(queries) - BATCH_QUERIES + 1, BATCH_QUERIES)]
    out: dict[str, Any] = {}
    for name, rows, per_call in (("single", single, 1), ("batch64", batches, BATCH_QUERIES)):
        log(f"in-process: {name} queries, 1 thread, {args.duration}s")
        cpu = CpuMeter({"process": os.getpid()}).start()
        run = run_closed_loop_threads(lambda i, rows=rows: index.search(rows[i % len(rows)], K, knobs, None), 1, args.duration, warmup=args.warmup, queries_per_call=per_call)
        cpu.stop()
        out[name] = run.summary() | {"cpu_ms_per_query": cpu.per_query_ms(run.calls * per_call)}
    return out


def report_tables(report: dict[str, Any]) -> None:
    g, p = report["grpc"], report["in_process"]
    rows: list[list[Any]] = [["recall@10", g["recall_at_10"], p["recall_at_10"], ratio(g["recall_at_10"], p["recall_at_10"])]]
    for name, label in (("single", "single query"), ("batch64", "batch of 64")):
        for key, unit in (("qps", "QPS"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            rows.append([f"{label}: {unit}", g[name][key], p[name][key], ratio(g[name][key], p[name][key])])
        gcpu = sum(g[name]["cpu_ms_per_query"].values())
        rows.append([f"{label}: CPU ms/query (all procs)", gcpu, p[name]["cpu_ms_per_query"]["process"], ratio(gcpu, p[name]["cpu_ms_per_query"]["process"])])
    rows.append(["insert vectors/s", g["insert"]["vectors_per_s"], p["insert"]["vectors_per_s"], ratio(g["insert"]["vectors_per_s"], p["insert"]["vectors_per_s"])])
    gm, pm = g["memory"], p["memory"]
    rows.append(["bytes/vector: index estimate", gm["stats_index_bytes_per_vector"], pm["index_memory_bytes_per_vector"], ratio(gm["stats_index_bytes_per_vector"], pm["index_memory_bytes_per_vector"])])
    rows.append(["bytes/vector: index+metadata (Stats)", gm["stats_index_plus_metadata_bytes_per_vector"], pm["index_memory_bytes_per_vector"], ratio(gm["stats_index_plus_metadata_bytes_per_vector"], pm["index_memory_bytes_per_vector"])])
    rows.append(["bytes/vector: RSS delta", gm["rss_delta_bytes_per_vector"], pm["rss_delta_bytes_per_vector"], ratio(gm["rss_delta_bytes_per_vector"], pm["rss_delta_bytes_per_vector"])])
    print_table(
        f"bench_shard: {report['dataset']} n={report['n_base']:,} {report['index']} {report['params']} ({report['duration_s']}s per phase)",
        ["metric", "gRPC shard", "in-process", "gRPC/in-proc"],
        rows,
        note="QPS counts queries (a batch of 64 is 64). Latency is per request. gRPC CPU = shard + client process.\n"
        "In-process 'index+metadata' has no metadata or id map, so it repeats the index estimate.",
    )
    for name in ("single", "batch64"):
        print_py_spy(f"shard during gRPC {name}", g[name].get("py_spy"))


def main() -> None:
    args = parse_args()
    params = parse_params(args.params if args.params is not None else DEFAULT_PARAMS[args.index])
    log(f"loading GloVe-50 (n_base={args.n_base or 'all'}, {args.n_queries} queries)")
    data = load_glove50(n_base=args.n_base, n_queries=args.n_queries, gt_k=100)
    base, queries = normalized(data.base), normalized(data.queries)
    report: dict[str, Any] = {
        "bench": "shard",
        "dataset": data.name,
        "n_base": len(data.base),
        "n_queries": len(data.queries),
        "index": args.index,
        "params": params,
        "duration_s": args.duration,
        "upsert_batch": args.upsert_batch,
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="quiver-bench-shard-") as tmp:
        shard = ServerProcess(["-m", "shard", "--data-dir", str(Path(tmp) / "shard"), "--port", str(free_port())], Path(tmp) / "shard.log")
        with running(shard):
            pid = pid_of(shard)
            log(f"shard pid {pid} serving on {shard.address}")
            report["grpc"] = uvloop.run(grpc_side(shard.address, pid, data, args.index, params, args))
            index, report["in_process"] = in_process_side(data, base, queries, args.index, params, args)
            # Query phases after both loads, so neither side's search runs while the other builds.
            report["grpc"] |= uvloop.run(grpc_latency(shard.address, pid, data, args))
            report["in_process"] |= in_process_latency(index, queries, args)
            log("stopping the shard (it snapshots on SIGTERM)")
    g, p = report["grpc"], report["in_process"]
    report["ratios_grpc_over_in_process"] = {
        "recall_at_10": ratio(g["recall_at_10"], p["recall_at_10"]),
        **{f"{name}_{key}": ratio(g[name][key], p[name][key]) for name in ("single", "batch64") for key in ("qps", "p50_ms", "p99_ms")},
        "insert_vectors_per_s": ratio(g["insert"]["vectors_per_s"], p["insert"]["vectors_per_s"]),
        "bytes_per_vector_stats_vs_index": ratio(g["memory"]["stats_index_plus_metadata_bytes_per_vector"], p["memory"]["index_memory_bytes_per_vector"]),
        "bytes_per_vector_rss": ratio(g["memory"]["rss_delta_bytes_per_vector"], p["memory"]["rss_delta_bytes_per_vector"]),
    }
    report_tables(report)
    emit_json(report)


if __name__ == "__main__":
    run_main(main)
