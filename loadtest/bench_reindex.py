"""The rolling reindex's build throughput against the index library's own, and a cutover timeline, in one run
(GloVe-50, cosine, HNSW m=16 efc=200):

    python -m loadtest.bench_reindex [--n-base 100000]

1. Raw: hnswlib's add_items over the whole normalised array in this process (all cores, as the shard's
   adapter calls it), and the shard's own adapter fed 1024-point batches as the reindex sends them.
2. Through the cluster: a 1-shard collection loaded through the router, then `Reindex` to a new HNSW
   version (same parameters: a rebuild) while one caller keeps searching and one keeps writing. Build
   throughput is points exported and indexed into v2 per second, from the Reindex call until v2 is ready.
3. The cutover under that load: its call's time (seal, replay of the last writes, the transaction), the time
   from the call's start to the first search answered by v2, and how many searches and writes failed.

Tables go to stderr, the JSON report to stdout. Client, router and shards share this machine's cores, so
the ratio is a lower bound of what a machine with cores to spare for the router would show.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from loadtest.bench_common import build_in_process, emit_json, log, machine, normalized, print_table, ratio, run_main
from loadtest.datasets import load_glove50
from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster

HNSW = {"m": 16, "ef_construction": 200, "ef_search": 64}
LOAD_BATCH = 2000


def raw_builds(base: np.ndarray) -> dict[str, Any]:
    unit = normalized(base)
    index = hnswlib.Index(space="ip", dim=unit.shape[1])
    index.init_index(max_elements=len(unit), M=HNSW["m"], ef_construction=HNSW["ef_construction"])
    started = time.perf_counter()
    index.add_items(unit, np.arange(len(unit)), num_threads=-1)
    whole = time.perf_counter() - started
    _, batched = build_in_process("hnsw", HNSW, unit, batch=1024)
    return {
        "hnswlib_add_items_points_per_s": round(len(unit) / whole, 1),
        "adapter_1024_batches_points_per_s": round(len(unit) / batched, 1),
    }


async def reindex_under_load(router: str, base: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    n = len(base)
    async with AsyncClient(router, timeout=120) as client:
        await client.create_collection("bench", base.shape[1], index="hnsw", index_params=HNSW, shards=1)
        loading = time.perf_counter()
        for start in range(0, n, LOAD_BATCH):
            await client.upsert("bench", [f"p{i}" for i in range(start, min(start + LOAD_BATCH, n))], base[start:start + LOAD_BATCH])
        ingest_s = time.perf_counter() - loading
        log(f"loaded {n:,} points through the router in {ingest_s:.1f} s")
        stopped = False
        failures = {"search": 0, "write": 0}
        answered: list[tuple[float, int]] = []  # (time, version) of each search answer
        writes = [0]

        async def search() -> None:
            i = 0
            while not stopped:
                i += 1
                try:
                    [result] = await client.search("bench", queries[i % len(queries)], k=10, timeout=2)
                    answered.append((time.perf_counter(), result.version))
                except Exception:  # noqa: BLE001 - counted
                    failures["search"] += 1
                await asyncio.sleep(0.005)

        async def write() -> None:
            i = 0
            while not stopped:
                i += 1
                try:
                    await client.upsert("bench", [f"w{i}"], base[i % n:i % n + 1], timeout=5)
                    writes[0] += 1
                except Exception:  # noqa: BLE001 - counted
                    failures["write"] += 1
                await asyncio.sleep(0.01)

        load = [asyncio.ensure_future(search()), asyncio.ensure_future(write())]
        try:
            started = time.perf_counter()
            build = await client.reindex("bench", index="hnsw", index_params=HNSW)
            while build.state == "building":
                await asyncio.sleep(0.2)
                [build] = await client.reindex_status("bench")
            built_s = time.perf_counter() - started
            assert build.state == "ready", build.failure
            exported = sum(s.exported for s in build.shards)
            log(f"v2 ready after {built_s:.1f} s: {exported:,} points exported, {build.written:,} writes into v2")
            await asyncio.sleep(2.0)  # v2 follows v1 under the write load for a while
            cutover_at = time.perf_counter()
            await client.cutover("bench", expected_active=1)
            cutover_s = time.perf_counter() - cutover_at
            await asyncio.sleep(1.0)
        finally:
            stopped = True
            await asyncio.gather(*load)
        first_v2 = min((t for t, v in answered if v == 2), default=None)
        count = (await client.versions("bench")).versions[-1].point_count
    return {
        "points": n, "ingest_points_per_s": round(n / ingest_s, 1),
        "build_s": round(built_s, 2), "build_points_per_s": round(exported / built_s, 1), "exported": exported,
        "writes_into_v2": build.written, "cutover_call_s": round(cutover_s, 4),
        "cutover_to_first_v2_answer_s": round(first_v2 - cutover_at, 4) if first_v2 is not None else None,
        "searches": len(answered), "searches_failed": failures["search"], "writes_acked": writes[0], "writes_failed": failures["write"],
        "versions_answering": sorted({v for _, v in answered}), "v2_points_after": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-base", type=int, default=100_000)
    args = parser.parse_args()
    data = load_glove50(n_base=args.n_base, n_queries=500, gt_k=10)
    base = np.ascontiguousarray(data.base, dtype="<f4")
    queries = np.ascontiguousarray(data.queries, dtype="<f4")
    raw = raw_builds(base)
    log(f"raw: add_items {raw['hnswlib_add_items_points_per_s']:,.0f} points/s, adapter in batches {raw['adapter_1024_batches_points_per_s']:,.0f} points/s")
    with tempfile.TemporaryDirectory(prefix="quiver-bench-reindex-") as tmp:
        with LocalCluster(Path(tmp), shards=1) as cluster:
            served = asyncio.run(reindex_under_load(cluster.router_address, base, queries))
    add_items = raw["hnswlib_add_items_points_per_s"]
    print_table(
        f"Build throughput, {args.n_base:,} GloVe-50 points, HNSW m16 efc200, all cores",
        ["path", "points/s", "vs add_items"],
        [
            ["hnswlib add_items, whole array, in process", add_items, 1.0],
            ["shard adapter, 1024-point batches, in process", raw["adapter_1024_batches_points_per_s"], ratio(raw["adapter_1024_batches_points_per_s"], add_items)],
            ["reindex through the cluster, under load", served["build_points_per_s"], ratio(served["build_points_per_s"], add_items)],
            ["ingest through the router (for reference)", served["ingest_points_per_s"], ratio(served["ingest_points_per_s"], add_items)],
        ],
    )
    print_table(
        "Cutover under one searcher and one writer",
        ["cutover call s", "call start -> first v2 answer s", "searches", "failed", "writes acked", "failed", "v2 points after"],
        [[served["cutover_call_s"], served["cutover_to_first_v2_answer_s"], served["searches"], served["searches_failed"],
          served["writes_acked"], served["writes_failed"], served["v2_points_after"]]],
    )
    emit_json({"benchmark": "reindex", "machine": machine(), "n_base": args.n_base, "hnsw": HNSW, "raw": raw, "served": served,
               "build_vs_add_items": ratio(served["build_points_per_s"], add_items)})


if __name__ == "__main__":
    run_main(main)
