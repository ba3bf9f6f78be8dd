"""Calibrate the sizing planner on the served system: a shard server process loaded and searched through a router.

    quiver-loadtest calibrate-served --kinds hnsw,ivf_pq --sizes 100000,300000 --validate 1000000

`quiver-loadtest calibrate` fits the bare index (a library call in one process). A deployment runs shard
server processes behind routers, and they hold and spend more than the index: ids and metadata columns,
the raw-vector copy, gRPC and protobuf per request, the WAL and the router's split per write. This measures
those on real processes and fits the planner's served coefficients (loadtest.sizing), on top of the bare
ones already in the calibration file; then it checks the plan at sizes the fit did not see.

Per (kind, size), a fresh local cluster (etcd, one shard server, one router, all on loopback) is loaded
through the router with the same SYNTHETIC Gaussian-mixture data and index parameters as the bare
calibration (its details file says which; L2), each point with a string id and three metadata fields
(loadtest.bench_memory's: a category string, an int, a float). Measured:

- memory: the shard process's resident memory growth from the empty server to the loaded one, settled:
  RssAnon, what the process holds and cannot give back, is what is fitted (RssFile, recorded beside it, is
  mapped files in the page cache: mostly hnsw's raw-vector arena, which the kernel writes back and reclaims,
  and how much of it is resident depends on the run, 74 to 192 B a point here); and the empty server's RSS;
- ingest: CPU seconds of the router and shard processes while the points are upserted (IVF-PQ's training,
  which a served build does on the way, included), and the wall time;
- queries: `clients` client threads, one channel each, single queries at the bare calibration's ef_search
  (or nprobe), for `qps_seconds`: the router's and the shard's CPU seconds per query, the wall QPS and
  recall@10 against exact ground truth.

The fit: memory and ingest are lines over sizes (slopes per point; the empty process and IVF training drop
out as intercepts); what the slope holds beyond the planner's bare figures (the index layout with its
calibrated overhead, the ids' and metadata's own bytes) is the served per-point
coefficient. A query's shard CPU beyond the bare index's 1 / qps_per_core at that size is the served
request cost; the router's CPU per query is a mean. Validation compares the plan with measurements at
other sizes, and with any bench_memory results given (other sizes and parameters).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc
import numpy as np

from loadtest.bench_common import GRPC_OPTIONS, CpuMeter, pid_of, run_closed_loop_threads
from loadtest.bench_memory import memory_of, metadata_of, point_id
from loadtest.calibrate import CalibrationParams
from loadtest.calibration_fit import line_fit, percent_error
from loadtest.machine import describe_machine, machine_line
from loadtest.sizing import (
    KIND_PREFIX,
    Coefficients,
    SizingInput,
    _build_core_s_per_vector,
    _qps_per_core,
    plan,
    snapshot_estimate_bytes_per_point,
)

KINDS = ("hnsw", "ivf_pq", "flat")
COLLECTION = "calibration"
RECALL_QUERIES = 200
# loadtest.bench_memory's points: ids "doc-000000001" (13 bytes), categories "category-07" (11 bytes) plus
# an int and a float (8 bytes each).
ID_BYTES = 13
METADATA_BYTES = 11 + 8 + 8


@dataclass(frozen=True)
class ServedParams(CalibrationParams):
    """The bare calibration's data and index parameters (so its rates apply), and how the served run drives them."""

    qps_seconds: float = 10.0
    clients: int = 8
    batch: int = 2000
    streams: int = 2  # upserts in flight at once, so the router and the shard overlap

    @property
    def train_size(self) -> int:
        """IVF-PQ's training sample: 39 points per list (faiss's minimum without a warning), 10,000 at least."""
        return max(39 * self.nlist, 10_000)

    @classmethod
    def of_bare_calibration(cls, details: dict[str, Any], **overrides: Any) -> "ServedParams":
        """The bare calibration's data and index parameters (its details file), so the bare rates apply."""
        bare = details.get("params", {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**({k: v for k, v in bare.items() if k in known and k not in ("queries",)} | overrides))

    def index_params(self, kind: str, n: int) -> dict[str, int]:
        if kind == "hnsw":
            return {"m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        if kind == "ivf_pq":
            # Trained on what the bare calibration trains on (the shard's default would wait for more points).
            return {"nlist": self.nlist, "m": self.pq_m, "nbits": self.nbits, "nprobe": self.nprobe, "train_size": min(n, self.train_size)}
        return {}

    def sizing_input(self, kind: str, n: int, *, pq_m: int | None = None, nlist: int | None = None, metric: str = "l2") -> SizingInput:
        """One shard of n points as this calibration loads them (l2), on a node too big to split it."""
        return SizingInput(
            vectors=n, dim=self.dim, index_kind=kind, hnsw_m=self.hnsw_m, ivf_nlist=nlist or self.nlist,
            ivf_nprobe=self.nprobe, pq_m=pq_m or self.pq_m, pq_nbits=self.nbits, metric=metric, id_bytes_per_point=ID_BYTES,
            metadata_bytes_per_point=METADATA_BYTES, node_ram_bytes=2**62, node_cores=1,
        )


@dataclass(frozen=True)
class ServedMeasurement:
    kind: str
    n: int
    rss_growth_bytes: int  # the shard's VmRSS, loaded less empty
    rss_anon_growth_bytes: int
    rss_file_growth_bytes: int
    empty_shard_rss_bytes: int
    ingest_core_s: float  # router + shard CPU while upserting (and, for ivf_pq, training)
    ingest_wall_s: float
    queries: int
    qps_wall: float
    shard_core_s_per_query: float
    router_core_s_per_query: float
    client_core_s_per_query: float
    p50_ms: float
    p99_ms: float
    recall_at_10: float
    snapshot_bytes: int = 0  # the shard's newest snapshot file once loaded (0: not measured, an older run)
    client_ingest_core_s: float = 0.0  # the loading client's own CPU (the machine's speed while loading; 0: an older run)


def _labels(results: Sequence[Any]) -> np.ndarray:
    rows = np.full((len(results), 10), -1, dtype=np.int64)
    for r, result in enumerate(results):
        found = [int(i.rsplit("-", 1)[1]) for i in result.ids][:10]
        rows[r, : len(found)] = found
    return rows


async def _load(address: str, kind: str, base: np.ndarray, params: ServedParams) -> None:
    from quiver.client import AsyncClient

    async with AsyncClient(address, timeout=900) as client:
        await client.create_collection(COLLECTION, params.dim, metric="l2", index=kind, index_params=params.index_params(kind, len(base)))
        edges = np.linspace(0, len(base), params.streams + 1).astype(int)

        async def stream(start: int, stop: int) -> None:
            for lo in range(start, stop, params.batch):
                hi = min(stop, lo + params.batch)
                await client.upsert(COLLECTION, [point_id(i) for i in range(lo, hi)], base[lo:hi],
                                    [metadata_of(i) for i in range(lo, hi)], batch_size=params.batch)

        await asyncio.gather(*(stream(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])))
        while not all(r.trained for r in (await client.status()).replicas if r.collection == COLLECTION):
            await asyncio.sleep(0.5)  # IVF-PQ trains in the background once it holds train_size points


def _wait_for_list_compaction(address: str, log: Callable[[str], None], timeout_s: float = 120.0) -> None:
    """Until no IVF-PQ partition of the shard has a compaction of its lists due (one runs once writes go
    quiet): the memory of a loaded, idle shard."""
    from quiver.v1 import shard_pb2, shard_pb2_grpc

    with grpc.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            stats = stub.Stats(shard_pb2.StatsRequest(), timeout=60).partitions  # due is never set but on IVF-PQ
            if not any(p.list_compaction_due for p in stats) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    if any(p.list_compaction_due for p in stats):
        log(f"  the shard did not compact its IVF lists within {timeout_s:.0f} s; measured without")


def measure_served(kind: str, n: int, params: ServedParams, log: Callable[[str], None] = print) -> ServedMeasurement:
    from loadtest.datasets import exact_ground_truth, gaussian_mixture, recall_at_k
    from quiver.local_cluster import LocalCluster
    from quiver.v1 import router_pb2, router_pb2_grpc, types_pb2

    data = gaussian_mixture(n, params.dim, params.clusters, params.seed, params.queries, "l2", gt_k=0)
    base, queries = data.base, data.queries
    truth = exact_ground_truth(base, queries[:RECALL_QUERIES], 10, "l2")
    with tempfile.TemporaryDirectory(prefix="quiver-calibrate-served-") as tmp, LocalCluster(Path(tmp), shards=1) as cluster:
        assert cluster.router is not None
        shard_pid, router_pid = pid_of(cluster.shard_servers[0]), pid_of(cluster.router)
        time.sleep(1.0)
        empty = memory_of(shard_pid)
        meter = CpuMeter({"router": router_pid, "shard": shard_pid, "client": os.getpid()}).start()
        wall = time.perf_counter()
        asyncio.run(_load(cluster.router_address, kind, base, params))
        ingest_wall = time.perf_counter() - wall
        ingest = meter.stop()
        if kind == "ivf_pq":
            _wait_for_list_compaction(cluster.shard_servers[0].address, log)
        time.sleep(3.0)  # a snapshot or training still finishing gives its memory back
        loaded = memory_of(shard_pid)
        log(f"  loaded {n:,} in {ingest_wall:,.1f} s; shard RSS {empty['VmRSS'] / 2**20:,.0f} -> {loaded['VmRSS'] / 2**20:,.0f} MiB")
        snapshot = _snapshot_bytes(cluster.shard_servers[0].address, Path(tmp) / "shard-0")

        knobs = types_pb2.SearchParams(ef_search=params.ef_search) if kind == "hnsw" else types_pb2.SearchParams(nprobe=params.nprobe)
        requests = [router_pb2.RouterSearchRequest(collection=COLLECTION, queries=q.astype("<f4").tobytes(), k=10, params=knobs) for q in queries]
        stubs = [router_pb2_grpc.RouterStub(grpc.insecure_channel(cluster.router_address, options=GRPC_OPTIONS)) for _ in range(params.clients)]
        found = [stubs[0].Search(r, timeout=60).results[0] for r in requests[:RECALL_QUERIES]]
        recall = recall_at_k(_labels(found), truth, 10)
        free: list[Any] = list(stubs)  # each client thread borrows a channel of its own
        lock = threading.Lock()

        def one(i: int) -> None:
            with lock:
                stub = free.pop()
            try:
                stub.Search(requests[i % len(requests)], timeout=30)
            finally:
                with lock:
                    free.append(stub)

        meter = CpuMeter({"router": router_pid, "shard": shard_pid, "client": os.getpid()})
        run_closed_loop_threads(one, params.clients, 1.0, warmup=0)  # warm-up, not recorded
        meter.start()
        run = run_closed_loop_threads(one, params.clients, params.qps_seconds, warmup=0)
        used = meter.stop()
    calls = max(run.calls, 1)
    return ServedMeasurement(
        kind=kind, n=n,
        rss_growth_bytes=loaded["VmRSS"] - empty["VmRSS"],
        rss_anon_growth_bytes=loaded["RssAnon"] - empty["RssAnon"],
        rss_file_growth_bytes=loaded["RssFile"] - empty["RssFile"],
        empty_shard_rss_bytes=empty["VmRSS"],
        ingest_core_s=ingest["router"] + ingest["shard"], ingest_wall_s=ingest_wall,
        queries=run.calls, qps_wall=run.qps,
        shard_core_s_per_query=used["shard"] / calls, router_core_s_per_query=used["router"] / calls,
        client_core_s_per_query=used["client"] / calls,
        p50_ms=run.percentile_ms(50), p99_ms=run.percentile_ms(99), recall_at_10=recall, snapshot_bytes=snapshot,
        client_ingest_core_s=ingest["client"],
    )


def _snapshot_bytes(shard_address: str, data_dir: Path) -> int:
    """Snapshot every partition of the shard server now, and the size of each one's newest snapshot file."""
    from quiver.v1 import shard_pb2, shard_pb2_grpc

    with grpc.insecure_channel(shard_address, options=GRPC_OPTIONS) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        for spec in stub.ListPartitions(shard_pb2.ListPartitionsRequest(), timeout=60).partitions:
            stub.Snapshot(shard_pb2.SnapshotRequest(ref=spec.ref), timeout=600)
    newest: dict[Path, Path] = {}
    for path in sorted(data_dir.rglob("snapshot-*.qsnap")):  # names sort by LSN
        newest[path.parent] = path
    return sum(path.stat().st_size for path in newest.values())


# -- the fit ----------------------------------------------------------------------------------------


def _bare_bytes_per_point(kind: str, n: int, params: ServedParams, bare: Coefficients) -> float:
    """What the bare plan puts in one shard of n points: the index, the ids' and metadata's own bytes. IVF lists
    at their exact size: a served shard compacts them once writes go quiet, and is measured after that."""
    if kind == "ivf_pq":
        bare = dataclasses.replace(bare, ivfpq_list_slack_fraction=0.0)
    return plan(params.sizing_input(kind, n), bare).shard_ram_bytes / n


def _bare(coeffs: Coefficients) -> Coefficients:
    """`coeffs` as a plan of the bare index: no kind served."""
    return dataclasses.replace(coeffs, **{f"{prefix}_served_measured": False for prefix in KIND_PREFIX.values()},
                               **{f"{prefix}_served_validated": False for prefix in KIND_PREFIX.values()})


def fit_sizes(kind: str, ms: Sequence[ServedMeasurement], params: ServedParams) -> list[ServedMeasurement]:
    """The measurements a kind's lines are fitted on. Below its training sample an IVF-PQ shard trains on all it
    holds, so its training's memory and CPU grow with n there and are fixed above: a line across that bend
    fits neither side."""
    if kind != "ivf_pq":
        return list(ms)
    usable = [m for m in ms if m.n >= params.train_size]
    if not usable:
        raise ValueError(f"ivf_pq needs calibration sizes of at least its training sample, max(39 * nlist, 10,000) = "
                         f"{params.train_size:,}; got {', '.join(f'{m.n:,}' for m in ms)}")
    return usable


# The factor is fitted only where the bare index's cost per query differs enough between the sizes to
# tell it from the request's fixed cost: IVF-PQ's barely moves with n (0.138 vs 0.145 ms from 200k to 1M),
# and a line through two such points turns 10% of measurement noise into a factor of 13.
FACTOR_FIT_MIN_SPREAD = 0.5


def request_cost_fit(shard_core_s: Sequence[float], index_core_s: Sequence[float]) -> tuple[float, float]:
    """(factor, request): shard CPU per query = factor * the bare index's + request, least squares with the
    factor at least 1 (a served search does the bare search's work and more) and the request at least 0.
    With too little spread in the bare cost (FACTOR_FIT_MIN_SPREAD) the factor is 1."""
    x, y = np.asarray(index_core_s, dtype=float), np.asarray(shard_core_s, dtype=float)
    factor = 1.0
    if len(x) >= 2 and float(x.min()) > 0 and float(np.ptp(x)) >= FACTOR_FIT_MIN_SPREAD * float(x.min()):
        factor = max(1.0, float(np.polyfit(x, y, 1)[0]))
    request = float(np.mean(y - factor * x))
    if request < 0:  # a slope steeper than the costs can be: the line through the origin instead
        factor = max(1.0, float(x @ y) / float(x @ x))
        request = max(0.0, float(np.mean(y - factor * x)))
    return factor, request


@dataclass(frozen=True)
class SpeedReference:
    """The machine's speed of record for CPU costs, read from the client's own CPU: mean seconds per query
    while querying and per point while loading, over the fit's measurements (0: not measured).

    The client does the same work for every query and every point at every size (encode, send, decode), so its
    CPU per unit moves only with the machine: on this shared 2-core VM by up to 20% between windows a few
    minutes apart, and the router's and shard's costs with it (router / client stayed 2.10-2.24 over six
    windows in which the router's own cost ranged 0.49-0.66 ms)."""

    query_core_s: float = 0.0
    ingest_core_s_per_point: float = 0.0


def speed_reference(measurements: Sequence[ServedMeasurement]) -> SpeedReference:
    query = [m.client_core_s_per_query for m in measurements if m.client_core_s_per_query > 0]
    ingest = [m.client_ingest_core_s / m.n for m in measurements if m.client_ingest_core_s > 0]
    return SpeedReference(float(np.mean(query)) if query else 0.0, float(np.mean(ingest)) if ingest else 0.0)


def speed_scales(m: ServedMeasurement, reference: SpeedReference) -> tuple[float, float]:
    """(queries, ingest): what `m`'s CPU costs are multiplied by to be at the speed of record (1: unknown)."""
    query = reference.query_core_s / m.client_core_s_per_query if reference.query_core_s > 0 and m.client_core_s_per_query > 0 else 1.0
    ingest = (reference.ingest_core_s_per_point / (m.client_ingest_core_s / m.n)
              if reference.ingest_core_s_per_point > 0 and m.client_ingest_core_s > 0 else 1.0)
    return query, ingest


def at_reference_speed(m: ServedMeasurement, reference: SpeedReference) -> ServedMeasurement:
    """`m` with its router's and shard's CPU costs (per query, and loading) scaled to the speed of record."""
    query, ingest = speed_scales(m, reference)
    return dataclasses.replace(m, shard_core_s_per_query=m.shard_core_s_per_query * query,
                               router_core_s_per_query=m.router_core_s_per_query * query,
                               client_core_s_per_query=m.client_core_s_per_query * query,
                               ingest_core_s=m.ingest_core_s * ingest, client_ingest_core_s=m.client_ingest_core_s * ingest)


def fit_served(measurements: Sequence[ServedMeasurement], params: ServedParams, bare: Coefficients) -> tuple[Coefficients, dict[str, Any]]:
    """`bare` with its served coefficients fitted to `measurements` (kinds not measured keep theirs)."""
    bare = _bare(bare)
    fitted: dict[str, Any] = {"served_ref_dim": params.dim, "served_ref_ivf_nlist": params.nlist}
    details: dict[str, Any] = {}
    for kind in sorted({m.kind for m in measurements}):
        ms = fit_sizes(kind, sorted((m for m in measurements if m.kind == kind), key=lambda m: m.n), params)
        prefix = KIND_PREFIX[kind]
        reference = ms[-1].n
        inp = params.sizing_input(kind, reference)
        bare_plan = plan(inp, bare)
        bare_per_point = (bare_plan.shard_ram_bytes - bare_plan.fixed_bytes) / reference

        def bare_build(n: int) -> float:  # the bare index's add of n points, core-seconds, as the planner has it
            return n * _build_core_s_per_vector(params.sizing_input(kind, n), bare, n)

        # Lines over sizes: memory's intercept holds the per-shard structures, ingest's the IVF training.
        # What the planner adds per point is the slope of what the bare plan does not explain.
        beyond_ingest = [(m.n, m.ingest_core_s - bare_build(m.n)) for m in ms]
        # Over the bare plan at each size (its bytes per point are not constant: IVF lists' slack shrinks as
        # they grow), so the served line is what the bare plan does not explain.
        beyond_bytes = [(m.n, m.rss_anon_growth_bytes - m.n * _bare_bytes_per_point(kind, m.n, params, bare)) for m in ms]
        if len({m.n for m in ms}) >= 2:
            bytes_slope, bytes_fixed = line_fit([(m.n, m.rss_anon_growth_bytes) for m in ms])
            served_bytes, served_fixed = line_fit(beyond_bytes)
            ingest_slope, ingest_fixed = line_fit(beyond_ingest)
        else:
            bytes_slope, bytes_fixed = (ms[0].rss_anon_growth_bytes - bare_plan.fixed_bytes) / ms[0].n, float(bare_plan.fixed_bytes)
            served_bytes, served_fixed = beyond_bytes[0][1] / ms[0].n, 0.0
            ingest_slope, ingest_fixed = beyond_ingest[0][1] / ms[0].n, 0.0
        fitted[f"{prefix}_served_measured"] = True
        fitted[f"{prefix}_served_bytes_per_point"] = served_bytes
        fitted[f"{prefix}_served_ingest_core_s_per_point"] = ingest_slope
        # The intercepts: what a served shard holds and spends once, beyond the bare plan's fixed structures.
        fitted[f"{prefix}_served_fixed_bytes"] = max(0.0, served_fixed)
        fitted[f"{prefix}_served_ingest_fixed_core_s"] = max(0.0, ingest_fixed)
        index_core_s = [1.0 / _qps_per_core(params.sizing_input(kind, m.n), bare, m.n) for m in ms]
        factor, request = request_cost_fit([m.shard_core_s_per_query for m in ms], index_core_s)
        fitted[f"{prefix}_served_index_cost_factor"] = factor
        fitted[f"{prefix}_served_request_core_s"] = request
        snapshots = [(m.n, m.snapshot_bytes) for m in ms if m.snapshot_bytes > 0]
        if snapshots:
            # What the layout's estimate of a snapshot misses per point (the planner adds it at any point shape).
            slope = line_fit(snapshots)[0] if len({n for n, _ in snapshots}) >= 2 else snapshots[0][1] / snapshots[0][0]
            fitted[f"{prefix}_served_snapshot_extra_bytes_per_point"] = slope - snapshot_estimate_bytes_per_point(inp, bare, served=True)
        details[kind] = {
            "fitted_on": [m.n for m in ms],
            "bytes_per_point_slope": bytes_slope, "bytes_fixed_intercept": bytes_fixed,
            "bare_bytes_per_point": bare_per_point,
            "ingest_core_s_beyond_bare_slope": ingest_slope, "ingest_core_s_fixed_intercept": ingest_fixed,
            "bare_build_core_s_per_point_at_largest": _build_core_s_per_vector(inp, bare, reference),
            "shard_core_s_per_query": [m.shard_core_s_per_query for m in ms], "bare_index_core_s_per_query": index_core_s,
            "snapshot_bytes": [m.snapshot_bytes for m in ms],
        } | {k: v for k, v in fitted.items() if k.startswith(prefix)}
    fitted["router_core_s_per_query"] = float(np.mean([m.router_core_s_per_query for m in measurements]))
    fitted["shard_process_bytes"] = float(np.mean([m.empty_shard_rss_bytes for m in measurements]))
    return dataclasses.replace(bare, **fitted), details


@dataclass(frozen=True)
class ServedPrediction:
    bytes_per_point: float  # the shard's RSS growth per point (its empty process apart)
    ingest_core_s_per_point: float
    served_qps_per_core: float  # queries per CPU second of the router and the shard together


def predict_served(kind: str, n: int, params: ServedParams, coeffs: Coefficients, *, pq_m: int | None = None,
                   nlist: int | None = None, metric: str = "l2") -> ServedPrediction:
    p = plan(params.sizing_input(kind, n, pq_m=pq_m, nlist=nlist, metric=metric), coeffs)
    return ServedPrediction(
        bytes_per_point=p.shard_ram_bytes / n,
        ingest_core_s_per_point=p.build_core_seconds / n,
        served_qps_per_core=1.0 / (p.shard_core_s_per_query + p.router_core_s_per_query),
    )


def validation_row(m: ServedMeasurement, params: ServedParams, coeffs: Coefficients, tolerance: float,
                   speed: SpeedReference = SpeedReference()) -> dict[str, Any]:
    """The plan against `m`. CPU figures are compared at the machine's speed of record (at_reference_speed);
    the raw figures are reported beside them."""
    p = predict_served(m.kind, m.n, params, coeffs)
    at_speed = at_reference_speed(m, speed)
    raw = {"ingest_core_s_per_point": m.ingest_core_s / m.n,
           "served_qps_per_core": 1.0 / (m.shard_core_s_per_query + m.router_core_s_per_query)}
    measured = {
        "bytes_per_point": m.rss_anon_growth_bytes / m.n,
        "ingest_core_s_per_point": at_speed.ingest_core_s / m.n,
        "served_qps_per_core": 1.0 / (at_speed.shard_core_s_per_query + at_speed.router_core_s_per_query),
    }
    row: dict[str, Any] = {"kind": m.kind, "n": m.n, "source": "calibrate-served"}
    for name, value in measured.items():
        error = percent_error(getattr(p, name), value)
        row |= {f"{name}_predicted": getattr(p, name), f"{name}_measured": value, f"{name}_error_percent": error,
                f"{name}_within_tolerance": abs(error) <= tolerance}
    for name, value in raw.items():
        row |= {f"{name}_raw_measured": value, f"{name}_raw_error_percent": percent_error(getattr(p, name), value)}
    query_scale, ingest_scale = speed_scales(m, speed)
    return row | {"machine_speed_scale": query_scale, "machine_ingest_speed_scale": ingest_scale}


def bench_memory_row(path: Path, params: ServedParams, coeffs: Coefficients, tolerance: float) -> dict[str, Any]:
    """The plan against a loadtest.bench_memory result (its own size and index parameters, same point shape)."""
    report = json.loads(path.read_text())
    kind, n, index_params = report["index"], int(report["n"]), report.get("params", {})
    if report.get("dim", params.dim) != params.dim or (kind == "hnsw" and index_params.get("m", params.hnsw_m) != params.hnsw_m):
        raise ValueError(f"{path}: dim {report.get('dim')} / params {index_params} differ from the calibration's")
    p = predict_served(kind, n, params, coeffs, pq_m=index_params.get("m") if kind == "ivf_pq" else None,
                       nlist=index_params.get("nlist") if kind == "ivf_pq" else None,
                       metric=report.get("metric", "cosine"))  # bench_memory loads cosine collections
    measured = report["grown"]["RssAnon"] / n
    error = percent_error(p.bytes_per_point, measured)
    return {"kind": kind, "n": n, "source": str(path), "params": index_params, "bytes_per_point_predicted": p.bytes_per_point,
            "bytes_per_point_measured": measured, "bytes_per_point_error_percent": error,
            "bytes_per_point_within_tolerance": abs(error) <= tolerance}


# -- the run ----------------------------------------------------------------------------------------

SERVED_FIELDS = tuple(f.name for f in dataclasses.fields(Coefficients) if "served" in f.name or f.name in ("shard_process_bytes", "router_core_s_per_query"))


def calibrate_served(
    sizes: Sequence[int], validate: Sequence[int], kinds: Sequence[str], params: ServedParams, bare: Coefficients,
    *, bench_memory: Sequence[Path] = (), tolerance_percent: float = 15.0, log: Callable[[str], None] = print,
) -> tuple[Coefficients, dict[str, Any]]:
    """Measure, fit on `sizes`, validate on `validate` (and bench_memory results); the coefficients and details."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)}")
    if not sizes:
        raise ValueError("need at least one calibration size")
    if not bare.measured:
        raise ValueError("the bare coefficients are estimates: run `quiver-loadtest calibrate` first, with the same parameters")
    measured: list[ServedMeasurement] = []
    for kind in kinds:
        for n in sorted(sizes):
            log(f"served {kind} at {n:,} x {params.dim} (synthetic), fit ...")
            measured.append(measure_served(kind, n, params, log))
            log("  " + format_measurement(measured[-1]))
    checks: list[ServedMeasurement] = []
    for kind in kinds:
        for n in validate:
            log(f"served {kind} at {n:,} x {params.dim} (synthetic), validation ...")
            checks.append(measure_served(kind, n, params, log))
            log("  " + format_measurement(checks[-1]))
    return fit_and_validate(measured, checks, params, bare, bench_memory=bench_memory, tolerance_percent=tolerance_percent)


def kind_validated(kind: str, validation: Sequence[dict[str, Any]]) -> bool:
    """Whether `kind` was validated at all, and every figure of every row within tolerance."""
    rows = [v for v in validation if v["kind"] == kind]
    return bool(rows) and all(value for row in rows for name, value in row.items() if name.endswith("_within_tolerance"))


def misses(validation: Sequence[dict[str, Any]]) -> list[str]:
    """The validation's figures out of tolerance, as 'hnsw at 300,000: bytes_per_point -29.0%'."""
    return [f"{v['kind']} at {v['n']:,}: {name.removesuffix('_within_tolerance')} {v[name.removesuffix('_within_tolerance') + '_error_percent']:+.1f}%"
            for v in validation for name, ok in v.items() if name.endswith("_within_tolerance") and not ok]


def merge_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run's details from several: per kind, the measurements of the last run that measured it. Their data
    and index parameters must agree (so the bare rates apply to all)."""
    if not runs:
        raise ValueError("no run to refit")
    compared = ("dim", "clusters", "seed", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "nbits")
    first = runs[0]["params"]
    for run in runs[1:]:
        differ = [k for k in compared if run["params"].get(k) != first.get(k)]
        if differ:
            raise ValueError(f"runs to merge differ in {differ}: refit them apart")
    merged = dict(runs[-1])
    for key in ("measurements", "validation_measurements"):
        chosen: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            kinds = {m["kind"] for m in run["measurements"]}
            for kind in kinds:
                chosen[kind] = [m for m in run[key] if m["kind"] == kind]
        merged[key] = [m for kind in sorted(chosen) for m in chosen[kind]]
    return merged


def refit(details: dict[str, Any] | Sequence[dict[str, Any]], bare: Coefficients, *, bench_memory: Sequence[Path] = (),
          tolerance_percent: float = 15.0) -> tuple[Coefficients, dict[str, Any]]:
    """The fit and validation again, from the measurements runs' details hold (after a change to the model);
    several runs are merged per kind (merge_runs)."""
    details = merge_runs([details] if isinstance(details, dict) else list(details))
    params = ServedParams(**details["params"])
    measured = [ServedMeasurement(**m) for m in details["measurements"]]
    checks = [ServedMeasurement(**m) for m in details["validation_measurements"]]
    return fit_and_validate(measured, checks, params, bare, bench_memory=bench_memory, tolerance_percent=tolerance_percent, machine=details.get("machine"))


def fit_and_validate(
    measured: Sequence[ServedMeasurement], checks: Sequence[ServedMeasurement], params: ServedParams, bare: Coefficients,
    *, bench_memory: Sequence[Path] = (), tolerance_percent: float = 15.0, machine: dict[str, Any] | None = None,
) -> tuple[Coefficients, dict[str, Any]]:
    reference = speed_reference(measured)
    coeffs, fit = fit_served([at_reference_speed(m, reference) for m in measured], params, bare)
    validation = [validation_row(m, params, coeffs, tolerance_percent, reference) for m in checks]
    validation += [bench_memory_row(path, params, coeffs, tolerance_percent) for path in bench_memory]
    sizes = sorted({m.n for m in measured})
    kinds = sorted({m.kind for m in measured})
    coeffs = dataclasses.replace(coeffs, **{f"{KIND_PREFIX[kind]}_served_validated": kind_validated(kind, validation) for kind in kinds})
    machine = machine or describe_machine()
    coeffs = dataclasses.replace(coeffs, served_notes=_notes(sizes, kinds, params, validation, tolerance_percent, machine))
    details = {
        "synthetic": True,
        "dataset": f"gaussian_mixture(dim={params.dim}, clusters={params.clusters}, seed={params.seed}, metric=l2)",
        "machine": machine,
        "params": dataclasses.asdict(params),
        "point": {"id_bytes": ID_BYTES, "metadata_bytes": METADATA_BYTES, "fields": ["category (string)", "year (int)", "score (float)"]},
        "sizes": list(sizes),
        "measurements": [dataclasses.asdict(m) for m in measured],
        "validation_measurements": [dataclasses.asdict(m) for m in checks],
        "fit": fit,
        "speed_reference": dataclasses.asdict(reference),
        "coefficients": {name: getattr(coeffs, name) for name in SERVED_FIELDS},
        "validation": validation,
        "tolerance_percent": tolerance_percent,
    }
    return coeffs, details


def _notes(
    sizes: Sequence[int], kinds: Sequence[str], params: ServedParams, validation: Sequence[dict[str, Any]], tolerance: float,
    machine: dict[str, Any],
) -> str:
    parts = [
        f"Measured by `quiver-loadtest calibrate-served` on {machine_line(machine)}: one shard server and one router "
        f"on loopback, loaded through the router with SYNTHETIC Gaussian-mixture data ({params.dim}-d, L2), a {ID_BYTES}-byte id "
        f"and {METADATA_BYTES} bytes of metadata in 3 fields a point; {', '.join(kinds)} at {', '.join(f'{n:,}' for n in sorted(sizes))}; "
        f"queries from {params.clients} client threads at ef_search={params.ef_search} / nprobe={params.nprobe}.",
    ]
    if validation:
        rows = "; ".join(
            f"{v['kind']} at {v['n']:,}{' (bench_memory)' if v['source'] != 'calibrate-served' else ''}: memory "
            f"{v['bytes_per_point_error_percent']:+.1f}%"
            + (f", ingest {v['ingest_core_s_per_point_error_percent']:+.1f}% "
               f"({v.get('ingest_core_s_per_point_raw_error_percent', v['ingest_core_s_per_point_error_percent']):+.1f}% raw), "
               f"QPS/core {v['served_qps_per_core_error_percent']:+.1f}% "
               f"({v.get('served_qps_per_core_raw_error_percent', v['served_qps_per_core_error_percent']):+.1f}% raw)"
               if "ingest_core_s_per_point_error_percent" in v else "")
            for v in validation
        )
        parts.append(f"Validation against the plan (tolerance {tolerance:g}%; CPU figures at the machine's speed of record, "
                     f"read from the client's own CPU per query and per point, raw beside them): {rows}.")
    return " ".join(parts)


def format_measurement(m: ServedMeasurement) -> str:
    return (f"{m.kind} n={m.n:,}: shard RSS +{m.rss_growth_bytes / 2**20:,.1f} MiB ({m.rss_growth_bytes / m.n:,.1f} B/point; "
            f"anon {m.rss_anon_growth_bytes / m.n:,.1f}, file {m.rss_file_growth_bytes / m.n:,.1f}), empty shard {m.empty_shard_rss_bytes / 2**20:,.0f} MiB; "
            f"ingest {m.ingest_core_s:,.1f} core-s ({m.n / m.ingest_wall_s:,.0f} points/s wall); {m.qps_wall:,.0f} QPS wall, "
            f"CPU/query shard {m.shard_core_s_per_query * 1e3:.3f} ms, router {m.router_core_s_per_query * 1e3:.3f} ms, "
            f"client {m.client_core_s_per_query * 1e3:.3f} ms; p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms; recall@10 {m.recall_at_10:.3f}")


def format_summary(coeffs: Coefficients, details: dict[str, Any]) -> str:
    lines = ["served coefficients:"]
    lines += [f"  {name:<38} {getattr(coeffs, name):.6g}" for name in SERVED_FIELDS if name != "served_notes"]
    tol = details["tolerance_percent"]
    lines.append(f"validation at sizes the fit did not use (acceptance: within {tol:g}%):")
    lines.append("  (CPU figures at the machine's speed of record; raw: as measured; speed: the factor between them, from the client's own CPU)")
    lines.append(f"  {'kind':<7} {'n':>11}  {'B/point plan':>12} {'measured':>9} {'err':>7}  {'ingest err':>10} {'raw':>7} {'speed':>6}  "
                 f"{'QPS/core plan':>13} {'measured':>9} {'err':>7} {'raw':>7} {'speed':>6}  source")
    for v in details["validation"]:
        served = "ingest_core_s_per_point_error_percent" in v
        cpu = (f"{v['ingest_core_s_per_point_error_percent']:>+9.1f}% {v.get('ingest_core_s_per_point_raw_error_percent', 0.0):>+6.1f}% "
               f"{v.get('machine_ingest_speed_scale', 1.0):>6.3f}  {v['served_qps_per_core_predicted']:>13,.0f} "
               f"{v['served_qps_per_core_measured']:>9,.0f} {v['served_qps_per_core_error_percent']:>+6.1f}% "
               f"{v.get('served_qps_per_core_raw_error_percent', 0.0):>+6.1f}% {v.get('machine_speed_scale', 1.0):>6.3f}"
               if served else f"{'-':>10} {'-':>7} {'-':>6}  {'-':>13} {'-':>9} {'-':>7} {'-':>7} {'-':>6}")
        lines.append(
            f"  {v['kind']:<7} {v['n']:>11,}  {v['bytes_per_point_predicted']:>12,.1f} {v['bytes_per_point_measured']:>9,.1f} "
            f"{v['bytes_per_point_error_percent']:>+6.1f}%  {cpu}"
            f"  {'calibrate-served' if v['source'] == 'calibrate-served' else Path(v['source']).name}"
        )
    return "\n".join(lines)
