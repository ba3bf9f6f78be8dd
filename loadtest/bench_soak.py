"""Soak under overload: minutes of mixed writes and searches at twice the measured capacity.

    python -m loadtest.bench_soak [--duration 600] [--overload 2.0] [--n-base 50000]
                                  [--queries-in-flight 64] [--queued-write-bytes 8388608]

A real cluster on loopback (etcd, 3 shard servers, a router; `quiver.local_cluster`) holds GloVe-50.
Closed loops of 1 to 32 clients first measure capacity: the best rate of answered requests (90% searches
of k=10 under a 200 ms deadline, 10% upserts of 100 new points under 1 s; searches carry 16 queries at
ef_search 256, so the servers, not the one load-generating process, are what runs out). Then an open loop offers `--overload`
times that rate (Poisson arrivals) for `--duration` seconds, with the shard servers' admission budgets
set small enough that they refuse work instead of queueing it. Reported, as JSON (stdout) and a table:
- crashes: every process still alive at the end;
- peak RSS of each shard server, sampled each second, against its budgets;
- refusals (RESOURCE_EXHAUSTED): how many, and how long a refusal took (p50/p99, target <= 10 ms);
- accepted searches: p50/p99 against their 200 ms deadline, and how many missed it;
- writes: acknowledged, refused, failed; then every acknowledged id is read back: lost must be 0.

Run by hand, not by the tests. The load generator shares this machine's cores with the cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import re
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench_common import cpu_seconds, emit_json, log, machine, pid_of, print_table, rss_bytes, run_main
from loadtest.bench_memory import memory_of
from loadtest.datasets import load_glove50
from loadtest.drivers import closed_loop, open_loop
from loadtest.schedule import poisson_offsets
from quiver.gc_tuning import freeze_startup_heap
from quiver.local_cluster import LocalCluster
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc, types_pb2

SEARCH_DEADLINE_S = 0.2
QUERY_BYTES = 50 * 4  # one GloVe-50 float32 query vector, as a shard holds it in flight
WRITE_DEADLINE_S = 1.0
SEARCH_SHARE = 0.9
# What the shard servers' searches and commit slices did with the index lock (quiver.metrics).
LOCK_HISTOGRAMS = ("quiver_shard_search_lock_wait_seconds", "quiver_shard_write_slice_hold_seconds")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of overload")
    parser.add_argument("--overload", type=float, default=2.0, help="offered rate as a multiple of the measured capacity")
    parser.add_argument("--n-base", type=int, default=50_000, help="GloVe-50 points loaded first")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    # Heavy requests, so that twice the servers' capacity is still a rate the one load-generating process
    # (which shares these cores) can send: otherwise it is the generator that is overloaded, not Quiver.
    parser.add_argument("--queries-per-search", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=256)
    parser.add_argument("--write-batch", type=int, default=100)
    parser.add_argument("--queries-in-flight", type=int, default=32, help="each shard server's search budget")
    parser.add_argument("--queued-write-bytes", type=int, default=65536, help="each shard server's write budget")
    parser.add_argument("--max-queued-searches", type=int, default=16, help="the router's search budget")
    parser.add_argument("--router-queued-write-bytes", type=int, default=3 * 65536, help="the router's write budget (bytes)")
    parser.add_argument("--worker-nice", type=int, default=16, help="the shard servers' worker-thread nice increment: the router and this generator share their cores")
    parser.add_argument("--worker-policy", choices=("normal", "idle"), default="idle", help="the shard servers' worker-thread scheduling policy: idle (SCHED_IDLE) leaves every core to the event loops first")
    parser.add_argument("--snapshot-interval-s", type=float, default=600.0, help="the shard servers' snapshot interval (a partition that changed is snapshotted this long after its last one)")
    parser.add_argument("--timeline-bucket-s", type=float, default=0.0, help="the failure timeline's bucket (0: a twentieth of the duration)")
    parser.add_argument("--shard-nice", type=int, default=0, help="the shard servers' whole-process nice increment (event loops included)")
    parser.add_argument("--commit-yield-ratio", type=float, default=2.0, help="the shard servers' commit rest per slice, as a multiple of its lock hold, while searches run")
    parser.add_argument("--commit-nice", type=int, default=0, help="the shard servers' further nice increment for commit threads")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=128, help="the router's (and each shard's) RPC budget")
    return parser.parse_args()


class Mix:
    """The request mix: call(slot) sends a search or an upsert and returns its outcome kind."""

    def __init__(self, stub: router_pb2_grpc.RouterStub, queries: np.ndarray, fresh: np.ndarray, args: argparse.Namespace) -> None:
        self.stub, self.queries, self.fresh = stub, queries, fresh
        self.per_search, self.write_batch = args.queries_per_search, args.write_batch
        self.params = types_pb2.SearchParams(ef_search=args.ef_search)
        self.next_id = itertools.count()
        self.acknowledged: list[str] = []
        self.kinds: dict[int, str] = {}
        # From each call's actual send, by (kind, code): the open loop's own latency counts from the intended
        # send time, which includes this generator's backlog when it falls behind.
        self.from_send: dict[tuple[str, str], list[float]] = {}
        # What callers were told, by (kind, code) and the message's shape, with each call's time from send.
        self.messages: dict[tuple[str, str], dict[str, list[float]]] = {}
        # When each call ended (perf_counter) and how, for the timeline: steady misses and stalls read apart.
        self.ended: list[tuple[float, str, str]] = []
        rng = np.random.default_rng(7)
        self.is_search = rng.random(10_000_000) < SEARCH_SHARE

    async def __call__(self, slot: int) -> str:
        sent = time.perf_counter()
        kind = "search" if self.is_search[slot % len(self.is_search)] else "write"
        try:
            await self._send(slot, kind)
        except grpc.aio.AioRpcError as error:
            ended, code = time.perf_counter(), error.code().name
            self.from_send.setdefault((kind, code), []).append(ended - sent)
            # Numbers vary per call; the message's shape is what says which path refused or failed it.
            shape = re.sub(r"[0-9][0-9.]*", "N", error.details() or "")[:160]
            self.messages.setdefault((kind, code), {}).setdefault(shape, []).append(ended - sent)
            self.ended.append((ended, kind, code))
            raise
        ended = time.perf_counter()
        self.from_send.setdefault((kind, "OK"), []).append(ended - sent)
        self.ended.append((ended, kind, "OK"))
        return "ok"

    async def _send(self, slot: int, kind: str) -> None:
        if kind == "search":
            self.kinds[slot] = "search"
            start = (slot * self.per_search) % (len(self.queries) - self.per_search)
            queries = self.queries[start : start + self.per_search]
            request = router_pb2.RouterSearchRequest(collection="soak", queries=queries.tobytes(), k=10, params=self.params)
            await self.stub.Search(request, timeout=SEARCH_DEADLINE_S)
            return
        self.kinds[slot] = "write"
        numbers = [next(self.next_id) for _ in range(self.write_batch)]
        ids = [f"w{n}" for n in numbers]
        vectors = self.fresh[[n % len(self.fresh) for n in numbers]]
        await self.stub.Upsert(router_pb2.RouterUpsertRequest(collection="soak", ids=ids, vectors=vectors.tobytes()), timeout=WRITE_DEADLINE_S)
        self.acknowledged.extend(ids)


def outcome_code(outcome: Any) -> str:
    if isinstance(outcome, grpc.aio.AioRpcError):
        return outcome.code().name
    if isinstance(outcome, Exception):
        return type(outcome).__name__
    return "OK"


class Tally:
    def __init__(self, mix: Mix) -> None:
        self.mix = mix
        self.codes: Counter[tuple[str, str]] = Counter()
        self.latency: dict[tuple[str, str], list[float]] = {}

    def __call__(self, slot: int, latency_s: float, outcome: Any) -> None:
        key = (self.mix.kinds.get(slot, "?"), outcome_code(outcome))
        self.codes[key] += 1
        self.latency.setdefault(key, []).append(latency_s)

    def percentile_ms(self, key: tuple[str, str], p: float) -> float | None:
        values = self.latency.get(key)
        return round(float(np.percentile(values, p)) * 1e3, 2) if values else None


async def sample_rss(pids: dict[str, int], peaks: dict[str, int], anon_peaks: dict[str, int], stop: asyncio.Event) -> None:
    """Peak RSS of each process, sampled each second, and the peak of its anonymous part (RssAnon: heap and
    stacks, without the file pages it maps, such as a snapshot's staged files)."""
    while not stop.is_set():
        for name, pid in pids.items():
            try:
                memory = memory_of(pid)
            except OSError:
                peaks[name] = -1  # gone
                continue
            peaks[name] = max(peaks.get(name, 0), memory["VmRSS"])
            anon_peaks[name] = max(anon_peaks.get(name, 0), memory["RssAnon"])
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass


def cpu_by_policy(pid: int) -> dict[str, float]:
    """CPU seconds a process has used so far, split by scheduling class: "normal" threads (event loops, gRPC
    pollers) compete for the cores with every other normal thread of the machine, "idle" ones (SCHED_IDLE
    workers) only take what they leave. Threads that ended count as idle: the normal ones live as long as the
    process, while hnswlib starts (and ends) threads of its own from the workers for each call, which inherit
    their class."""
    normal = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if os.sched_getscheduler(int(tid)) != os.SCHED_IDLE:
                normal += cpu_seconds(pid, int(tid))
        except (ProcessLookupError, FileNotFoundError):
            continue  # the thread ended meanwhile
    return {"normal": normal, "idle": max(0.0, cpu_seconds(pid) - normal)}


def cores_used(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], seconds: float) -> dict[str, dict[str, float]]:
    return {name: {policy: round((after[name][policy] - before[name].get(policy, 0.0)) / seconds, 3) for policy in after[name]}
            for name in after if name in before}


async def partition_stats(address: str) -> list[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        return list((await shard_pb2_grpc.ShardStub(channel).Stats(shard_pb2.StatsRequest(), timeout=30)).partitions)


async def cluster_stats(cluster: LocalCluster) -> list[list[Any]]:
    """Each shard server's partition stats, in the order of `cluster.shard_servers`."""
    return [await partition_stats(server.address) for server in cluster.shard_servers]


def memory_split(cluster: LocalCluster, stats: list[list[Any]]) -> dict[str, dict[str, int]]:
    """Each shard server's RSS, and what its partitions hold as it accounts them (index, graph and vectors,
    plus ids and metadata columns): its RSS beyond that is the process itself, buffers and requests included."""
    return {f"shard-{i}": {"rss": rss_bytes(pid_of(server)), "data": sum(p.index_memory_bytes + p.metadata_memory_bytes for p in partitions)}
            for i, (server, partitions) in enumerate(zip(cluster.shard_servers, stats))}


def snapshots_since(stats: list[list[Any]], start_unix: float) -> list[float]:
    """When each partition's latest snapshot was taken, in seconds into the soak, if it was taken during it."""
    return sorted(round(p.last_snapshot_unix - start_unix, 1) for partitions in stats for p in partitions if p.last_snapshot_unix >= start_unix)


async def probe_loop_lag(lags: list[float], stop: asyncio.Event, interval_s: float = 0.005) -> None:
    """This generator's own event-loop lag: how late a 5 ms sleep wakes. Every latency measured here from
    send includes up to this much of the generator's own delay (it shares the cores with the cluster)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(interval_s)
        lags.append(max(0.0, loop.time() - before - interval_s))


async def soak(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    data = load_glove50()
    base = data.base[: args.n_base].astype("<f4")
    fresh = data.base[args.n_base : args.n_base + 100_000].astype("<f4")
    queries = data.queries[:1000].astype("<f4")
    channel = grpc.aio.insecure_channel(cluster.router_address)
    stub = router_pb2_grpc.RouterStub(channel)
    spec = router_pb2.CollectionSpec(name="soak", dim=base.shape[1], index=types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=16, ef_construction=100)), shards=3)
    await stub.CreateCollection(router_pb2.CreateCollectionRequest(spec=spec), timeout=60)
    log(f"loading {len(base)} points")
    for start in range(0, len(base), 2000):
        await stub.Upsert(router_pb2.RouterUpsertRequest(collection="soak", ids=[f"b{i}" for i in range(start, min(len(base), start + 2000))], vectors=base[start : start + 2000].tobytes()), timeout=120)

    mix = Mix(stub, queries, fresh, args)
    # Capacity: the best rate of answered requests that closed loops of 1 to 32 clients reach (past the
    # best concurrency, requests only wait longer and miss their deadlines).
    goodput = {}
    for concurrency in (1, 2, 4, 8, 16, 32):
        capacity_tally = Tally(mix)
        elapsed = await closed_loop(mix, capacity_tally, concurrency=concurrency, duration=args.capacity_seconds / 6)
        goodput[concurrency] = sum(n for (_, code), n in capacity_tally.codes.items() if code == "OK") / elapsed
    log("goodput by concurrency: " + ", ".join(f"c{c} {r:.0f}/s" for c, r in goodput.items()))
    capacity = max(goodput.values())
    rate = capacity * args.overload
    log(f"capacity {capacity:.0f} requests/s; offering {rate:.0f}/s for {args.duration:.0f} s")

    # From here on only the soak counts: the capacity runs' own refusals and failures are not its figures.
    mix.from_send.clear()
    mix.messages.clear()
    mix.ended.clear()
    memory_at_start = memory_split(cluster, await cluster_stats(cluster))
    locks_at_start = scrape_locks(cluster)  # the soak's own lock waits: the load's and capacity runs' are subtracted
    soak_start = time.perf_counter()
    soak_start_unix = time.time()
    pids = {f"shard-{i}": pid_of(s) for i, s in enumerate(cluster.shard_servers)}
    assert cluster.router is not None
    pids["router"] = pid_of(cluster.router)
    cpu_pids = {**pids, "etcd": cluster.etcd.pid, "generator": os.getpid()}
    cpu_at_start = {name: cpu_by_policy(pid) for name, pid in cpu_pids.items()}
    peaks: dict[str, int] = {}
    anon_peaks: dict[str, int] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pids, peaks, anon_peaks, stop))
    lags: list[float] = []
    lag_probe = asyncio.create_task(probe_loop_lag(lags, stop))
    tally = Tally(mix)
    freeze_startup_heap()  # this generator's own GC pauses would count in every latency it measures
    offsets = poisson_offsets(rate, args.duration, np.random.default_rng(3))
    wall = await open_loop(mix, tally, offsets=offsets, max_inflight=20_000)
    cpu = cores_used(cpu_at_start, {name: cpu_by_policy(pid) for name, pid in cpu_pids.items()}, time.perf_counter() - soak_start)
    stop.set()
    await sampler
    await lag_probe

    stats_at_end = await cluster_stats(cluster)
    memory_at_end = memory_split(cluster, stats_at_end)
    snapshots = snapshots_since(stats_at_end, soak_start_unix)
    lock_histograms = [{name: bucket_increase(before[name], after[name]) for name in LOCK_HISTOGRAMS}
                       for before, after in zip(locks_at_start, scrape_locks(cluster))]
    alive = {name: server.running for name, server in (*((f"shard-{i}", s) for i, s in enumerate(cluster.shard_servers)), ("router", cluster.router))}
    log(f"checking {len(mix.acknowledged)} acknowledged writes")
    present: set[str] = set()
    for start in range(0, len(mix.acknowledged), 5000):
        reply = await stub.Get(router_pb2.RouterGetRequest(collection="soak", ids=mix.acknowledged[start : start + 5000]), timeout=120)
        present.update(p.id for p in reply.points)
    await channel.close()

    def count(kind: str, code: str | None = None) -> int:
        return sum(n for (k, c), n in tally.codes.items() if k == kind and (code is None or c == code))

    searches_ok = tally.latency.get(("search", "OK"), [])
    # Admitted searches: every search the router did not refuse at once. One that failed after admission
    # (its deadline passed in the queue, or its shards answered too late) counts as later than any answer,
    # so the p99 holds within the deadline only if at most one admitted search in a hundred failed.
    admitted_failures = [math.inf for (kind, code), times in mix.from_send.items() if kind == "search" and code not in ("OK", "RESOURCE_EXHAUSTED") for _ in times]
    admitted = sorted(mix.from_send.get(("search", "OK"), []) + admitted_failures)
    return {
        "benchmark": "soak",
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("duration", "overload", "n_base", "queries_per_search", "ef_search", "write_batch", "queries_in_flight", "queued_write_bytes", "router_queued_write_bytes", "max_queued_searches", "max_concurrent_rpcs", "worker_nice", "worker_policy", "commit_nice", "shard_nice", "commit_yield_ratio", "snapshot_interval_s")},
        "capacity_rps": round(capacity, 1),
        "goodput_by_concurrency": {c: round(r, 1) for c, r in goodput.items()},
        "offered_rps": round(rate, 1),
        "offered": len(offsets),
        "wall_s": round(wall, 1),
        "alive_at_end": alive,
        "peak_rss_mib": {name: round(b / 2**20, 1) for name, b in peaks.items()},
        # Peak RSS against what the overload may add: the partitions' data (grown by the acknowledged writes)
        # plus the process besides it, which the admission budgets bound (queued write bytes, queries in
        # flight); "besides_data" before the overload and at its peak shows whether refusing held it.
        "memory_mib": {name: {
            "data_before": _mib(memory_at_start[name]["data"]), "data_after": _mib(memory_at_end[name]["data"]),
            "besides_data_before": _mib(memory_at_start[name]["rss"] - memory_at_start[name]["data"]),
            "besides_data_at_peak": _mib(peaks[name] - memory_at_end[name]["data"]),
            "peak_anonymous": _mib(anon_peaks[name]),
            "admission_budgets": _mib(args.queued_write_bytes + args.queries_in_flight * QUERY_BYTES),
        } for name in memory_at_start},
        "outcomes": {f"{k} {c}": n for (k, c), n in sorted(tally.codes.items())},
        "messages": {f"{k} {c}": {shape: {"count": len(times), "p50_ms": _ms(times, 50), "p99_ms": _ms(times, 99)}
                                  for shape, times in sorted(shapes.items(), key=lambda item: -len(item[1]))[:4]}
                     for (k, c), shapes in sorted(mix.messages.items())},
        "search_timeline": timeline(mix.ended, soak_start, bucket_s=args.timeline_bucket_s or max(5.0, args.duration / 20)),
        "snapshots_at_s": snapshots,
        "index_lock": {name.removeprefix("quiver_shard_").removesuffix("_seconds"): {
            "count": int(total[-1][1]) if total else 0, **{f"share_over_{int(t * 1e3)}ms": share_over(total, t) for t in (0.001, 0.01, 0.05, 0.1)}}
            for name in LOCK_HISTOGRAMS for total in [summed_buckets([h[name] for h in lock_histograms])]},
        "cores_used": cpu,
        "generator_loop_lag_ms": {"p50": _ms(lags, 50), "p99": _ms(lags, 99)},
        "refusal_ms_from_send": {kind: {"p50": _ms(mix.from_send.get((kind, "RESOURCE_EXHAUSTED"), []), 50), "p99": _ms(mix.from_send.get((kind, "RESOURCE_EXHAUSTED"), []), 99)} for kind in ("search", "write")},
        "accepted_search_ms": {"p50": tally.percentile_ms(("search", "OK"), 50), "p99": tally.percentile_ms(("search", "OK"), 99),
                               "over_deadline": int(sum(1 for x in searches_ok if x > SEARCH_DEADLINE_S)),
                               "from_send_p50": _ms(mix.from_send.get(("search", "OK"), []), 50), "from_send_p99": _ms(mix.from_send.get(("search", "OK"), []), 99)},
        "admitted_searches": {"count": len(admitted), "failed": len(admitted_failures),
                              "answered_in_time": int(sum(1 for x in admitted if x <= SEARCH_DEADLINE_S)),
                              "p99_ms_from_send": _ms_or_missed(admitted, 99), "p50_ms_from_send": _ms_or_missed(admitted, 50),
                              "goodput_per_s": round(len(searches_ok) / wall, 1) if wall else None},
        "writes": {"acknowledged_batches": count("write", "OK"), "refused_batches": count("write", "RESOURCE_EXHAUSTED"),
                   "other_failures": count("write") - count("write", "OK") - count("write", "RESOURCE_EXHAUSTED"),
                   "acknowledged_ids": len(mix.acknowledged), "lost_ids": len(set(mix.acknowledged) - present)},
    }


def scrape_histograms(address: str, names: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """Cumulative buckets (upper bound, count) of each named histogram in a server's /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for family in text_string_to_metric_families(text):
        if family.name in buckets:
            buckets[family.name] = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    return buckets


def scrape_locks(cluster: LocalCluster) -> list[dict[str, list[tuple[float, float]]]]:
    return [scrape_histograms(s.metrics_address, LOCK_HISTOGRAMS) for s in cluster.shard_servers]


def bucket_increase(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative buckets of what was observed between two scrapes of one histogram."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def summed_buckets(per_server: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    totals: dict[float, float] = {}
    for buckets in per_server:
        for bound, count in buckets:
            totals[bound] = totals.get(bound, 0.0) + count
    return sorted(totals.items())


def share_over(buckets: list[tuple[float, float]], seconds: float) -> float | None:
    """The share of observations above `seconds` (a bucket bound), from cumulative buckets."""
    if not buckets or buckets[-1][1] == 0:
        return None
    at_most = next((count for bound, count in buckets if bound >= seconds), buckets[-1][1])
    return round(1.0 - at_most / buckets[-1][1], 5)


def timeline(ended: list[tuple[float, str, str]], start: float, bucket_s: float) -> list[dict[str, Any]]:
    """Searches per time bucket: answered, failed after admission, refused."""
    buckets: dict[int, Counter[str]] = {}
    for at, kind, code in ended:
        if kind != "search":
            continue
        group = "ok" if code == "OK" else "refused" if code == "RESOURCE_EXHAUSTED" else "failed"
        buckets.setdefault(int((at - start) // bucket_s), Counter())[group] += 1
    return [{"from_s": round(b * bucket_s), **{g: counts.get(g, 0) for g in ("ok", "failed", "refused")}} for b, counts in sorted(buckets.items())]


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def _ms(values: list[float], p: float) -> float | None:
    return round(float(np.percentile(values, p)) * 1e3, 2) if values else None


def _ms_or_missed(ordered: list[float], p: float) -> float | str | None:
    """The p-th percentile of sorted times (nearest rank), "missed" where it falls on a failed call."""
    if not ordered:
        return None
    value = ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]
    return "missed" if math.isinf(value) else round(value * 1e3, 2)


def main() -> None:
    args = parse_args()
    shard_args = ("--queries-in-flight", str(args.queries_in_flight), "--queued-write-bytes", str(args.queued_write_bytes),
                  "--max-concurrent-rpcs", str(args.max_concurrent_rpcs), "--worker-nice", str(args.worker_nice), "--worker-policy", args.worker_policy, "--commit-nice", str(args.commit_nice), "--nice", str(args.shard_nice), "--commit-yield-ratio", str(args.commit_yield_ratio), "--snapshot-interval-s", str(args.snapshot_interval_s), "--metrics-port", "0")
    router_args = ("--max-queued-searches", str(args.max_queued_searches), "--max-concurrent-rpcs", str(args.max_concurrent_rpcs),
                   "--deadline-admission", "--max-queued-write-bytes", str(args.router_queued_write_bytes))
    with tempfile.TemporaryDirectory(prefix="quiver-soak-") as tmp, LocalCluster(Path(tmp), shards=3, shard_args=shard_args, router_args=router_args) as cluster:
        report = uvloop.run(soak(cluster, args))
    emit_json(report)
    rows = [["offered / capacity", f"{report['offered_rps']} / {report['capacity_rps']} req/s"],
            ["processes alive at end", all(report["alive_at_end"].values())],
            *[[f"peak RSS {name}", f"{mib} MiB"] for name, mib in report["peak_rss_mib"].items()],
            *[[f"{name}: data before / after; RSS besides data before / at peak (budgets {m['admission_budgets']})",
               f"{m['data_before']} / {m['data_after']}; {m['besides_data_before']} / {m['besides_data_at_peak']} MiB (peak anonymous {m['peak_anonymous']})"]
              for name, m in report["memory_mib"].items()],
            ["search refusal p50/p99 from send", f"{report['refusal_ms_from_send']['search']['p50']} / {report['refusal_ms_from_send']['search']['p99']} ms"],
            ["this generator's own loop lag p50/p99", f"{report['generator_loop_lag_ms']['p50']} / {report['generator_loop_lag_ms']['p99']} ms"],
            ["write refusal p50/p99 from send", f"{report['refusal_ms_from_send']['write']['p50']} / {report['refusal_ms_from_send']['write']['p99']} ms"],
            ["accepted search p50/p99 from intended send", f"{report['accepted_search_ms']['p50']} / {report['accepted_search_ms']['p99']} ms (deadline {SEARCH_DEADLINE_S * 1e3:.0f})"],
            ["accepted search p50/p99 from send", f"{report['accepted_search_ms']['from_send_p50']} / {report['accepted_search_ms']['from_send_p99']} ms"],
            ["admitted searches: failed / answered in time", f"{report['admitted_searches']['failed']} / {report['admitted_searches']['answered_in_time']} of {report['admitted_searches']['count']}"],
            ["admitted search p50/p99 from send (failed = late)", f"{report['admitted_searches']['p50_ms_from_send']} / {report['admitted_searches']['p99_ms_from_send']} ms"],
            ["admitted searches failed, per time bucket", ",".join(str(b["failed"]) for b in report["search_timeline"])],
            ["partition snapshots taken, seconds into the soak", ", ".join(map(str, report["snapshots_at_s"])) or "none"],
            *[[f"{name}: share over 10 / 50 / 100 ms", " / ".join(str(lock[f"share_over_{t}ms"]) for t in (10, 50, 100)) + f" of {lock['count']}"]
              for name, lock in report["index_lock"].items()],
            *[[f"cores used by {name} (normal / idle threads)", f"{used['normal']} / {used['idle']}"] for name, used in report["cores_used"].items()],
            ["search goodput", f"{report['admitted_searches']['goodput_per_s']} /s"],
            ["acknowledged writes lost", report["writes"]["lost_ids"]],
            *[[f"outcome {k}", n] for k, n in report["outcomes"].items()]]
    print_table(f"soak: {report['settings']['duration']:.0f} s at {report['settings']['overload']}x capacity", ["what", "value"], rows)


if __name__ == "__main__":
    run_main(main)
