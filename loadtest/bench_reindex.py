"""The rolling reindex, measured: build throughput against the index library's own, and the acceptance
scenarios under a steady open-loop query and write load from loadtest's drivers, with a timeline of each
(GloVe-50, cosine; base collection HNSW m=16 efc=200, 2 shards):

    python -m loadtest.bench_reindex [--n-base 100000] [--routers 2] [--search-rate 150] [--write-rate 40]

1. Raw: hnswlib's add_items over the whole normalised array in this process (all cores, as the shard's
   adapter calls it), three runs (the median is the baseline; this machine's speed varies between runs),
   and the shard's own adapter fed 1024-point batches as the reindex sends them.
2. Build throughput: a reindex of the loaded collection to a new HNSW version with the same parameters (a
   rebuild), with no other load, as the raw runs have none: points exported and indexed into v2 per second
   from the Reindex call until v2 is ready. That version is retired again.
3. Under load (searches through every router in turn at a Poisson rate, writes of new ids at a paced rate,
   both open loop, latency from the intended send time), one after another:
   a. an HNSW parameter change (m 16 -> 24, ef_construction 200 -> 100), cut over;
   b. a reshard 2 -> 3, cut over;
   c. HNSW -> IVF-PQ: built under load; the writes pause just before its cutover, the active version's
      answers to 50 queries are taken, the cutover and a rollback run (searches go on), and the answers after
      the rollback are compared with those (same ids for the same queries);
   d. the cutover to IVF-PQ again, under the full load.
   For each: build time per source shard, the verification figures (recall@10 against exact search on the
   new version, overlap@10 with the active one, p50/p99 of both, 100 queries), the cutover call's time, and
   from the cutover transaction (seen on an etcd watch of the collection record) to each router's first
   answer from the new version. At the end: every acknowledged write is in the active version, by id and
   vector; failed searches and writes are counted, and every answer's version is checked to move forward
   only, router by router (back only at the rollback).

Tables go to stderr, the JSON report to stdout. Client, routers and shards share this machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from loadtest.bench_common import build_in_process, emit_json, log, machine, normalized, print_table, ratio, run_main
from loadtest.datasets import load_glove50
from loadtest.drivers import open_loop
from loadtest.schedule import paced_offsets, poisson_offsets
from quiver.client import AsyncClient, Client
from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.records import CollectionRecord
from quiver.control_plane.store import ClusterStore
from quiver.local_cluster import LocalCluster
from quiver.verification import verify_version

HNSW = {"m": 16, "ef_construction": 200, "ef_search": 64}
LOAD_BATCH = 2000
COLLECTION = "bench"
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("hnsw params m16 efc200 -> m24 efc100", {"index": "hnsw", "index_params": {"m": 24, "ef_construction": 100, "ef_search": 64}}),
    ("reshard 2 -> 3", {"shards": 3}),
    # nlist and train_size are set for the collection's size in `scenarios`.
    ("hnsw -> ivf_pq", {"index": "ivf_pq", "index_params": {"m": 25, "nprobe": 32, "refine": 4}}),
]


def scenarios(n: int) -> list[tuple[str, dict[str, Any]]]:
    """SCENARIOS, with IVF-PQ's lists sized so that each of 3 shards holds enough points to train at once."""
    nlist = 256 if n >= 90_000 else 64
    out = []
    for title, change in SCENARIOS:
        if change.get("index") == "ivf_pq":
            change = {**change, "index_params": {**change["index_params"], "nlist": nlist, "train_size": min(39 * nlist, n // 4)}}
        out.append((title, change))
    return out


def raw_builds(base: np.ndarray, runs: int = 3) -> dict[str, Any]:
    unit = normalized(base)
    rates = []
    for _ in range(runs):
        index = hnswlib.Index(space="ip", dim=unit.shape[1])
        index.init_index(max_elements=len(unit), M=HNSW["m"], ef_construction=HNSW["ef_construction"])
        started = time.perf_counter()
        index.add_items(unit, np.arange(len(unit)), num_threads=-1)
        rates.append(len(unit) / (time.perf_counter() - started))
    _, batched = build_in_process("hnsw", HNSW, unit, batch=1024)
    return {
        "hnswlib_add_items_points_per_s": round(statistics.median(rates), 1),
        "hnswlib_add_items_runs": [round(r, 1) for r in rates],
        "adapter_1024_batches_points_per_s": round(len(unit) / batched, 1),
    }


@dataclass
class Load:
    """Open-loop searches and writes through every router in turn; what came back, and when."""

    clients: list[AsyncClient]
    base: np.ndarray
    queries: np.ndarray
    # (answered at, router, version, sent at) per answered search
    answers: list[tuple[float, int, int, float]] = field(default_factory=list)
    search_failures: list[tuple[float, str]] = field(default_factory=list)
    write_failures: list[tuple[float, str]] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # id -> base row of its vector
    writes_paused: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.writes_paused.set()  # set: writes flow

    async def search(self, slot: int) -> None:
        router = slot % len(self.clients)
        sent = time.perf_counter()
        [result] = await self.clients[router].search(COLLECTION, self.queries[slot % len(self.queries)], k=10, timeout=2)
        self.answers.append((time.perf_counter(), router, result.version, sent))

    async def write(self, slot: int) -> None:
        await self.writes_paused.wait()
        row = slot % len(self.base)
        point_id = f"w{slot}"
        await self.clients[slot % len(self.clients)].upsert(COLLECTION, [point_id], self.base[row:row + 1], timeout=5)
        self.acked[point_id] = row

    async def run(self, search_rate: float, write_rate: float, duration: float) -> None:
        rng = np.random.default_rng(7)

        def searched(slot: int, latency: float, outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                self.search_failures.append((time.perf_counter(), repr(outcome)[:300]))

        def written(slot: int, latency: float, outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                self.write_failures.append((time.perf_counter(), repr(outcome)[:300]))

        def while_running(offsets: np.ndarray) -> Any:
            for offset in offsets:  # the schedule ends when the run is stopped, not at its last offset
                if self.stopped:
                    return
                yield offset

        async def until_stopped(call: Any, done: Any, offsets: np.ndarray) -> None:
            await open_loop(call, done, offsets=while_running(offsets), max_inflight=256)  # type: ignore[arg-type]

        await asyncio.gather(
            until_stopped(self.search, searched, poisson_offsets(search_rate, duration, rng)),
            until_stopped(self.write, written, paced_offsets(write_rate, duration)),
        )


class RecordWatch:
    """When each change of the collection record (a cutover or rollback) reached this process."""

    def __init__(self, endpoint: str) -> None:
        self._etcd = EtcdClient([endpoint], timeout=5.0)
        self._store = ClusterStore(self._etcd)
        self.switches: list[tuple[float, int]] = []  # (time, active version)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        revision = (await self._store.snapshot()).revision
        key = self._store.keys.collection(COLLECTION)

        async def run() -> None:
            active = None
            async for event in self._store.watch(revision + 1):
                if event.kind == "put" and event.key == key:
                    record = CollectionRecord.from_json(event.value)
                    if record.active_version != active:
                        active = record.active_version
                        self.switches.append((time.perf_counter(), active))

        self._task = asyncio.ensure_future(run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._etcd.close()

    async def switch_to(self, version: int, after: float, timeout: float = 10.0) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for at, active in self.switches:
                if active == version and at >= after:
                    return at
            await asyncio.sleep(0.01)
        return None


async def wait_ready(client: AsyncClient, version: int) -> Any:
    while True:
        builds = [b for b in await client.reindex_status(COLLECTION) if b.version == version]
        if builds and builds[0].state != "building":
            assert builds[0].state == "ready", builds[0].failure
            return builds[0]
        await asyncio.sleep(0.2)


async def wait_trained(client: AsyncClient, version: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replicas = [r for r in (await client.status()).replicas if r.collection == COLLECTION and r.version == version]
        if replicas and all(r.trained for r in replicas):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"v{version} was not trained within {timeout:.0f} s")


async def first_answers_from(load: Load, version: int, after: float, timeout: float = 10.0) -> dict[int, float | None]:
    """Per router: when its first search answer from `version` after `after` came back."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        firsts: dict[int, float | None] = {r: None for r in range(len(load.clients))}
        for at, router, answered, _ in load.answers:
            if answered == version and at >= after and firsts[router] is None:
                firsts[router] = at
        if all(v is not None for v in firsts.values()):
            return firsts
        await asyncio.sleep(0.05)
    return firsts


async def switch(load: Load, watch: RecordWatch, client: AsyncClient, how: str, version: int, **kwargs: Any) -> dict[str, Any]:
    """A cutover or rollback to `version`, timed: its call, and from the transaction to each router's first
    answer from `version`."""
    called = time.perf_counter()
    if how == "cutover":
        await client.cutover(COLLECTION, **kwargs)
    else:
        await client.rollback(COLLECTION, **kwargs)
    returned = time.perf_counter()
    committed = await watch.switch_to(version, called)
    firsts = await first_answers_from(load, version, called)
    last = max((t for t in firsts.values() if t is not None), default=None)
    return {
        "call_s": round(returned - called, 4),
        "transaction_to_last_router_s": round(last - committed, 4) if last is not None and committed is not None else None,
        "transaction_to_router_s": {str(r): round(t - committed, 4) if t is not None and committed is not None else None for r, t in firsts.items()},
    }


async def scenario(load: Load, watch: RecordWatch, client: AsyncClient, sync_client: Client, title: str, change: dict[str, Any],
                   queries: np.ndarray, rollback_check: bool) -> dict[str, Any]:
    active = (await client.versions(COLLECTION)).active
    started = time.perf_counter()
    build = await client.reindex(COLLECTION, **change)
    version = build.version
    built = await wait_ready(client, version)
    built_s = time.perf_counter() - started
    if change.get("index") == "ivf_pq":
        await wait_trained(client, version)
    trained_s = time.perf_counter() - started
    exported = sum(s.exported for s in built.shards)
    log(f"{title}: v{version} ready after {built_s:.1f} s ({exported:,} points exported)")
    verification = (await asyncio.to_thread(verify_version, sync_client, COLLECTION, version, queries[:100])).as_dict()
    log(f"  verified: recall@10 {verification['recall']}, overlap@10 {verification['overlap']}, p99 {verification['p99_ms']} ms (active {verification['active_p99_ms']} ms)")
    result: dict[str, Any] = {
        "scenario": title, "from_version": active, "version": version, "build_s": round(built_s, 2), "ready_and_trained_s": round(trained_s, 2),
        "exported": exported, "build_points_per_s": round(exported / built_s, 1), "written_into_new": built.written,
        "build_s_per_source_shard": {str(s.source_shard): round(s.built_s, 2) for s in built.shards},
        "verification": verification,
    }
    if rollback_check:
        load.writes_paused.clear()
        await asyncio.sleep(1.0)  # writes in flight land, and v+1's replay catches up
        before = [[h.id for h in r.hits] for r in await client.search(COLLECTION, queries[:50], k=10)]
        result["cutover"] = await switch(load, watch, client, "cutover", version, expected_active=active)
        await asyncio.sleep(1.0)
        result["rollback"] = await switch(load, watch, client, "rollback", active, expected_active=version)
        after = await client.search(COLLECTION, queries[:50], k=10)
        result["rollback_same_answers"] = [[h.id for h in r.hits] for r in after] == before and {r.version for r in after} == {active}
        load.writes_paused.set()
        log(f"  cutover then rollback: same answers as before for 50 queries: {result['rollback_same_answers']}")
        await asyncio.sleep(2.0)
        result["second_cutover"] = await switch(load, watch, client, "cutover", version, expected_active=active)
    else:
        await asyncio.sleep(2.0)  # v+1 follows v under the load for a while
        result["cutover"] = await switch(load, watch, client, "cutover", version, expected_active=active)
    log(f"  cut over: {result.get('second_cutover', result['cutover'])}")
    await asyncio.sleep(1.0)
    await client.retire(COLLECTION, active)  # one version built from at a time; the old one is freed
    return result


def version_regressions(answers: list[tuple[float, int, int, float]], routers: int, rollback_windows: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Searches answered by an older version than a search sent earlier through the same router was, outside
    the rollback's window (where the versions go back by design). Ordered by when they were sent: a search
    pins its version when the router receives it, so one sent before the switch and answered after it is fine."""
    found = []
    for router in range(routers):
        newest, newest_sent = 0, 0.0
        for _, r, version, sent in sorted(answers, key=lambda a: a[3]):
            if r != router or any(a <= sent <= b for a, b in rollback_windows):
                continue
            if version < newest:
                found.append({"router": router, "version": version, "after_version": newest, "sent_after_s": round(sent - newest_sent, 4)})
            elif version > newest:
                newest, newest_sent = version, sent
    return found


async def all_acknowledged_present(client: AsyncClient, load: Load) -> dict[str, Any]:
    ids = sorted(load.acked)
    missing = wrong = 0
    unit = normalized(load.base)
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        found = {p.id: p for p in await client.get(COLLECTION, chunk, include_vectors=True, timeout=30)}
        for point_id in chunk:
            point = found.get(point_id)
            if point is None:
                missing += 1
            elif not np.allclose(np.asarray(point.vector, dtype=np.float32), unit[load.acked[point_id]], atol=1e-5):
                wrong += 1
    return {"acknowledged_writes": len(ids), "missing": missing, "wrong_vector": wrong}


async def run(cluster: LocalCluster, base: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    n = len(base)
    addresses = cluster.router_addresses
    clients = [AsyncClient(address, timeout=120) for address in addresses]
    client = clients[0]
    sync_client = Client(addresses[-1], timeout=60)
    watch = RecordWatch(cluster.etcd.endpoint)
    try:
        await client.create_collection(COLLECTION, base.shape[1], index="hnsw", index_params=HNSW, shards=2)
        loading = time.perf_counter()
        for start in range(0, n, LOAD_BATCH):
            await client.upsert(COLLECTION, [f"p{i}" for i in range(start, min(start + LOAD_BATCH, n))], base[start:start + LOAD_BATCH])
        ingest_s = time.perf_counter() - loading
        log(f"loaded {n:,} points through the router in {ingest_s:.1f} s")

        started = time.perf_counter()
        quiet = await client.reindex(COLLECTION, index="hnsw", index_params=HNSW)
        built = await wait_ready(client, quiet.version)
        quiet_s = time.perf_counter() - started
        quiet_exported = sum(s.exported for s in built.shards)
        log(f"quiet rebuild: {quiet_exported:,} points in {quiet_s:.1f} s ({quiet_exported / quiet_s:,.0f} points/s)")
        await client.retire(COLLECTION, quiet.version)

        await watch.start()
        load = Load(clients, base, queries)
        runner = asyncio.ensure_future(load.run(args.search_rate, args.write_rate, duration=3600))
        results = []
        windows: list[tuple[float, float]] = []
        try:
            await asyncio.sleep(3.0)
            planned = scenarios(n)
            for n_scenario, (title, change) in enumerate(planned):
                began = time.perf_counter()
                results.append(await scenario(load, watch, client, sync_client, title, change, queries, rollback_check=n_scenario == len(planned) - 1))
                if "rollback" in results[-1]:
                    windows.append((began, time.perf_counter()))
            await asyncio.sleep(3.0)
        finally:
            load.stopped = True
            await runner
        presence = await all_acknowledged_present(client, load)
        log(f"acknowledged writes: {presence}")
        return {
            "points": n, "routers": len(addresses), "ingest_points_per_s": round(n / ingest_s, 1),
            "quiet_rebuild": {"build_s": round(quiet_s, 2), "exported": quiet_exported, "points_per_s": round(quiet_exported / quiet_s, 1),
                              "build_s_per_source_shard": {str(s.source_shard): round(s.built_s, 2) for s in built.shards}},
            "scenarios": results,
            "load": {
                "search_rate": args.search_rate, "write_rate": args.write_rate, "searches_answered": len(load.answers),
                "searches_failed": len(load.search_failures), "writes_failed": len(load.write_failures),
                "search_failures": load.search_failures[:20], "write_failures": load.write_failures[:20],
                "versions_answering": sorted({a[2] for a in load.answers}),
                "version_regressions": version_regressions(load.answers, len(addresses), windows),
            },
            "acknowledged": presence,
        }
    finally:
        await watch.close()
        sync_client.close()
        for c in clients:
            await c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-base", type=int, default=100_000)
    parser.add_argument("--routers", type=int, default=2)
    parser.add_argument("--search-rate", type=float, default=150.0, help="searches per second, over all routers")
    parser.add_argument("--write-rate", type=float, default=40.0, help="single-point writes per second, over all routers")
    args = parser.parse_args()
    data = load_glove50(n_base=args.n_base, n_queries=500, gt_k=10)
    base = np.ascontiguousarray(data.base, dtype="<f4")
    queries = np.ascontiguousarray(data.queries, dtype="<f4")
    raw = raw_builds(base)
    log(f"raw: add_items {raw['hnswlib_add_items_runs']} points/s, adapter in batches {raw['adapter_1024_batches_points_per_s']:,.0f} points/s")
    with tempfile.TemporaryDirectory(prefix="quiver-bench-reindex-") as tmp:
        with LocalCluster(Path(tmp), shards=3, routers=args.routers) as cluster:
            served = asyncio.run(run(cluster, base, queries, args))
    add_items = raw["hnswlib_add_items_points_per_s"]
    quiet = served["quiet_rebuild"]["points_per_s"]
    emit_json({"benchmark": "reindex", "machine": machine(), "n_base": args.n_base, "hnsw": HNSW, "raw": raw, "served": served,
               "build_vs_add_items": ratio(quiet, add_items)})
    print_table(
        f"Build throughput, {args.n_base:,} GloVe-50 points, HNSW m16 efc200, all cores",
        ["path", "points/s", "vs add_items"],
        [
            ["hnswlib add_items, whole array, in process (median of 3)", add_items, 1.0],
            ["shard adapter, 1024-point batches, in process", raw["adapter_1024_batches_points_per_s"], ratio(raw["adapter_1024_batches_points_per_s"], add_items)],
            ["reindex through the cluster (2 -> 2 shards, no other load)", quiet, ratio(quiet, add_items)],
            ["ingest through the router (for reference)", served["ingest_points_per_s"], ratio(served["ingest_points_per_s"], add_items)],
        ]
        + [[f"reindex under load: {s['scenario']}", s["build_points_per_s"], ratio(s["build_points_per_s"], add_items)] for s in served["scenarios"]],
        note="Under load the build shares the cores with the searches and writes. An IVF-PQ build stores its points untrained (cheap) "
             "and trains once enough have arrived: its time to trained is in the next table.",
    )
    rows = []
    for s in served["scenarios"]:
        v = s["verification"]
        for step in ("cutover", "rollback", "second_cutover"):
            if step in s:
                per_shard = " ".join(f"{shard}:{t:g}" for shard, t in s["build_s_per_source_shard"].items())
                rows.append([s["scenario"], f"v{s['from_version']}->v{s['version']}", step, s["ready_and_trained_s"], per_shard,
                             v["recall"], v["overlap"], f"{v['p50_ms']}/{v['p99_ms']}", f"{v['active_p50_ms']}/{v['active_p99_ms']}",
                             s[step]["call_s"], s[step]["transaction_to_last_router_s"]])
    print_table(
        f"Reindex timeline under load ({served['routers']} routers; {served['load']['search_rate']:g} searches/s, {served['load']['write_rate']:g} writes/s)",
        ["scenario", "versions", "step", "ready (and trained) s", "build s per source shard", "recall@10", "overlap@10", "new p50/p99 ms", "active p50/p99 ms",
         "call s", "txn -> last router s"],
        rows,
    )
    load = served["load"]
    print_table(
        "Under the load, over the whole run",
        ["searches answered", "failed", "writes acked", "failed", "acked missing", "wrong vector", "older version after newer", "rollback same answers"],
        [[load["searches_answered"], load["searches_failed"], served["acknowledged"]["acknowledged_writes"], load["writes_failed"],
          served["acknowledged"]["missing"], served["acknowledged"]["wrong_vector"], len(load["version_regressions"]),
          served["scenarios"][-1].get("rollback_same_answers")]],
    )


if __name__ == "__main__":
    run_main(main)
