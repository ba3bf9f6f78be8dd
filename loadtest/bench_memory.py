"""Shard memory per vector against the index's own bytes plus the raw bytes of ids and metadata.

    python -m loadtest.bench_memory [--n 1000000] [--dim 128] [--index hnsw|ivf_pq] [--params m=16,...]

A real `python -m shard` process on loopback is loaded through its gRPC Upsert with N vectors, each with a
string id and three metadata fields (a category string, an int year, a float score), in batches. Its
memory is read from /proc before and after: VmRSS, split into RssAnon (the process's own memory: index,
columns, interpreter) and RssFile (mapped files: shared libraries, and the partition's raw-vector scratch
file, which is page cache the kernel writes back and drops under pressure). Reported against:

- the index's own bytes: hnswlib's `index_file_size()` (vectors, level-0 links, labels, upper levels) or,
  for IVF-PQ, the codes plus 8 B per id that faiss's inverted lists hold, as the shard's Stats reports;
- the raw metadata bytes: each id's UTF-8 bytes, the category's UTF-8 bytes, 8 B for the int, 8 B for
  the float.

The vectors are synthetic (Gaussian, normalised; seeded): no real embedding set in reach has 1M
128-d vectors, and memory per vector does not depend on their distribution. Run by hand; tables go to
stderr, JSON to stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop

from loadtest.bench_common import GRPC_OPTIONS, emit_json, log, machine, packed, parse_params, pid_of, print_table, ratio, run_main, running
from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import shard_pb2, shard_pb2_grpc, types_pb2
from quiver.wire.filters import metadata_to_proto
from quiver.wire.specs import index_to_proto

REF = shard_pb2.PartitionRef(collection="memory", shard=0, version=1)
CATEGORIES = [f"category-{c:02d}" for c in range(20)]
DEFAULT_PARAMS = {"hnsw": "m=16,ef_construction=64", "ivf_pq": "nlist=4096,m=64,nprobe=16"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors to load")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--index", choices=("hnsw", "ivf_pq"), default="hnsw")
    parser.add_argument("--params", default=None, help="index parameters, name=value,... (ef_construction does not change memory)")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-raw", action="store_true", help="skip measuring raw hnswlib's own RSS on the same data")
    return parser.parse_args()


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM (the peak) of a process, in bytes."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"}
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in wanted:
                out[name] = int(rest.split()[0]) * 1024
    return out


def point_id(n: int) -> str:
    return f"doc-{n:09d}"


def metadata_of(n: int) -> dict[str, Any]:
    return {"category": CATEGORIES[n % len(CATEGORIES)], "year": 1990 + n % 35, "score": (n % 1000) / 1000.0}


def raw_metadata_bytes(n: int) -> int:
    ids = sum(len(point_id(i).encode()) for i in range(n))
    categories = sum(len(CATEGORIES[i % len(CATEGORIES)].encode()) for i in range(len(CATEGORIES))) * (n // len(CATEGORIES))
    categories += sum(len(CATEGORIES[i % len(CATEGORIES)].encode()) for i in range(n - n % len(CATEGORIES), n))
    return ids + categories + 16 * n


COMPACTION_WAIT_S = 30.0


def batches(n: int, dim: int, batch: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        rows = rng.standard_normal((stop - start, dim)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield shard_pb2.UpsertRequest(
            ref=REF, ids=[point_id(i) for i in range(start, stop)], vectors=packed(rows),
            metadata=[metadata_to_proto(metadata_of(i)) for i in range(start, stop)],
        )


async def load(address: str, pid: int, args: argparse.Namespace, params: dict[str, int]) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        spec = shard_pb2.PartitionSpec(ref=REF, dim=args.dim, metric=types_pb2.COSINE, index=index_to_proto(args.index, params))
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec))
        before = memory_of(pid)
        start = time.perf_counter()
        for number, request in enumerate(batches(args.n, args.dim, args.batch, args.seed)):
            await stub.Upsert(request, timeout=600)
            if number % 100 == 0:
                log(f"loaded {number * args.batch:,} of {args.n:,}; RSS {memory_of(pid)['VmRSS'] / 2**20:,.0f} MiB")
        load_s = time.perf_counter() - start
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=REF))).partitions[0]
        while not stats.trained:  # IVF-PQ trains in the background once it holds train_size points
            await asyncio.sleep(1)
            stats = (await stub.Stats(shard_pb2.StatsRequest(ref=REF))).partitions[0]
        before_compaction = None
        if args.index == "ivf_pq":
            # The shard compacts its IVF lists once writes have been quiet for a few seconds (if 1% of the index
            # was written since its last compaction): what a loaded, idle shard holds. The memory from just
            # before is kept when one follows the load (what a shard holds while writes go on).
            compactions, just_loaded = stats.list_compactions, memory_of(pid)
            waited = time.monotonic()
            while stats.list_compaction_due and time.monotonic() - waited < COMPACTION_WAIT_S:
                await asyncio.sleep(1)
                stats = (await stub.Stats(shard_pb2.StatsRequest(ref=REF))).partitions[0]
            if stats.list_compactions > compactions:
                before_compaction = just_loaded
            else:
                log(f"no list compaction after the load (due: {stats.list_compaction_due}; {compactions} during it)")
        await asyncio.sleep(2)  # let a snapshot or training still finishing give its memory back
        after = memory_of(pid)
    return {"before": before, "after": after, "before_compaction": before_compaction, "load_s": load_s, "stats": stats}


def _raw_hnswlib_growth(n: int, dim: int, batch: int, seed: int, params: dict[str, int], out: Any) -> None:
    """In a fresh process: RssAnon growth of raw hnswlib holding the same vectors, added the way the shard
    adds them (same batches, capacity doubled as it fills)."""
    import hnswlib

    rows = [np.frombuffer(r.vectors, dtype="<f4").reshape(-1, dim) for r in batches(n, dim, batch, seed)]
    before = memory_of(os.getpid())["RssAnon"]
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=1024, M=params.get("m", 16), ef_construction=params.get("ef_construction", 200))
    count = 0
    for block in rows:
        if count + len(block) > index.get_max_elements():
            index.resize_index(max(count + len(block), 2 * index.get_max_elements()))
        index.add_items(block, np.arange(count, count + len(block)), num_threads=-1)
        count += len(block)
    out.put((memory_of(os.getpid())["RssAnon"] - before, int(index.index_file_size())))


def raw_hnswlib_growth(n: int, dim: int, batch: int, seed: int, params: dict[str, int]) -> tuple[int, int]:
    """(RssAnon growth, index_file_size) of raw hnswlib on the same data, measured in a child process."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_raw_hnswlib_growth, args=(n, dim, batch, seed, params, out))
    child.start()
    try:
        return out.get(timeout=3600)
    finally:
        child.join(60)


def index_own_bytes(kind: str, stats: Any, n: int, dim: int, params: dict[str, int]) -> int:
    if kind == "hnsw":
        return int(stats.index_memory_bytes - n)  # the shard adds its 1-byte live mask to hnswlib's own size
    m = params.get("m", 64)
    return n * (m + 8)  # PQ codes (m bytes at nbits=8) plus faiss's 8-byte id per code


def main() -> None:
    args = parse_args()
    params = parse_params(args.params or DEFAULT_PARAMS[args.index])
    with tempfile.TemporaryDirectory(prefix="quiver-bench-memory-") as tmp:
        shard = ServerProcess(
            ["-m", "shard", "--data-dir", str(Path(tmp) / "shard"), "--port", str(free_port())], Path(tmp) / "shard.log",
        )
        with running(shard):
            pid = pid_of(shard)
            log(f"shard pid {pid} on {shard.address}: loading {args.n:,} {args.dim}-d {args.index} vectors")
            measured = uvloop.run(load(shard.address, pid, args, params))
    n, stats, before, after = args.n, measured["stats"], measured["before"], measured["after"]
    own = index_own_bytes(args.index, stats, n, args.dim, params)
    raw_rss = None
    if args.index == "hnsw" and not args.no_raw:
        log("raw hnswlib: the same vectors in a fresh process")
        raw_rss, _ = raw_hnswlib_growth(n, args.dim, args.batch, args.seed, params)
    raw_meta = raw_metadata_bytes(n)
    reference = own + raw_meta
    grown = {key: after[key] - before[key] for key in ("VmRSS", "RssAnon", "RssFile")}
    report = {
        "benchmark": "bench_memory",
        "machine": machine(),
        "index": args.index,
        "metric": "cosine",
        "params": params,
        "n": n,
        "dim": args.dim,
        "load_seconds": round(measured["load_s"], 1),
        "load_vectors_per_s": round(n / measured["load_s"], 1),
        "index_own_bytes": own,
        "raw_hnswlib_rss_anon_growth_bytes": raw_rss,
        "raw_metadata_bytes": raw_meta,
        "reference_bytes": reference,
        "shard_stats": {"index_memory_bytes": stats.index_memory_bytes, "metadata_memory_bytes": stats.metadata_memory_bytes},
        "memory_before": before,
        "memory_after": after,
        "memory_before_list_compaction": measured["before_compaction"],
        "list_compactions": stats.list_compactions,
        "grown": grown,
        "ratios": {
            "rss_growth_over_reference": ratio(grown["VmRSS"], reference),
            "anon_growth_over_reference": ratio(grown["RssAnon"], reference),
            "rss_over_reference": ratio(after["VmRSS"], reference),
            "anon_over_reference": ratio(after["RssAnon"], reference),
            "anon_growth_over_raw_hnswlib_rss_plus_metadata": ratio(grown["RssAnon"], raw_rss + raw_meta) if raw_rss else None,
        },
    }
    uncompacted = measured["before_compaction"]["RssAnon"] - before["RssAnon"] if measured["before_compaction"] else None
    mib = 2**20
    print_table(
        f"Shard memory, {n:,} {args.dim}-d {args.index} vectors with ids and 3 metadata fields ({', '.join(f'{k}={v}' for k, v in params.items())})",
        ["figure", "MiB", "B / vector", "x reference"],
        [
            ["index's own bytes", own / mib, own / n, None],
            *([["raw hnswlib's RssAnon growth", raw_rss / mib, raw_rss / n, None]] if raw_rss else []),
            ["raw ids + metadata", raw_meta / mib, raw_meta / n, None],
            ["reference (sum)", reference / mib, reference / n, 1.0],
            ["RSS growth", grown["VmRSS"] / mib, grown["VmRSS"] / n, ratio(grown["VmRSS"], reference)],
            ["  RssAnon growth", grown["RssAnon"] / mib, grown["RssAnon"] / n, ratio(grown["RssAnon"], reference)],
            ["  RssFile growth", grown["RssFile"] / mib, grown["RssFile"] / n, ratio(grown["RssFile"], reference)],
            *([["  RssAnon growth before list compaction", uncompacted / mib, uncompacted / n, ratio(uncompacted, reference)]]
              if uncompacted is not None else []),
            ["RSS after load", after["VmRSS"] / mib, after["VmRSS"] / n, ratio(after["VmRSS"], reference)],
            ["  RssAnon after load", after["RssAnon"] / mib, after["RssAnon"] / n, ratio(after["RssAnon"], reference)],
            ["peak RSS (VmHWM)", after["VmHWM"] / mib, after["VmHWM"] / n, ratio(after["VmHWM"], reference)],
        ],
        note=f"empty shard before loading: RSS {before['VmRSS'] / mib:,.0f} MiB; loaded in {measured['load_s']:,.0f} s "
        f"({n / measured['load_s']:,.0f} vectors/s). RssFile includes the raw-vector scratch file (page cache).",
    )
    emit_json(report)


if __name__ == "__main__":
    run_main(main)
