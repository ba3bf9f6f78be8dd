"""Prometheus metrics of every Quiver process (prometheus-client), served over HTTP on `--metrics-port`.

One registry per process (prometheus-client's default). Every RPC is counted and timed in `rpc_guard`, so
no handler has its own copy; the router adds its calls to the shards, partial answers and hedges; the shard
server adds WAL fsync latency and, read at scrape time, each partition's figures. Names follow Prometheus'
conventions (`_total` on counters, `_seconds` and `_bytes` units); the list is in README.md.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram, start_http_server

T = TypeVar("T")

# 0.5 ms to 30 s: a cached one-shard search is under a millisecond, a cold exact scan or a training commit
# can take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPC_REQUESTS = Counter("quiver_rpc_requests", "RPCs answered, by service, method and gRPC status code.", ["service", "method", "code"])
RPC_SECONDS = Histogram("quiver_rpc_duration_seconds", "Time to answer an RPC, by service and method.", ["service", "method"], buckets=LATENCY_BUCKETS)
ADMISSION_REFUSALS = Counter(
    "quiver_admission_refusals", "Requests refused at once with RESOURCE_EXHAUSTED, by the budget they would pass.", ["budget"]
)
SHARD_CALL_SECONDS = Histogram(
    "quiver_router_shard_call_duration_seconds", "The router's calls to shard servers, by method and server address (each replica asked).",
    ["method", "server"], buckets=LATENCY_BUCKETS,
)
PARTIAL_RESULTS = Counter("quiver_router_partial_results", "Searches answered from fewer shards than were asked (allow_partial).")
HEDGED_READS = Counter("quiver_router_hedged_reads", "Reads sent to a second replica because the first was slow.")
REPLICA_FAILOVERS = Counter("quiver_router_replica_failovers", "Reads asked again of another replica after one failed or gave no answer in time.")
REPLICA_ACK_SECONDS = Histogram(
    "quiver_shard_replica_ack_seconds",
    "On a primary: from a write being durable locally until every in-sync replica holds it (replica lag).",
    buckets=LATENCY_BUCKETS,
)
PROMOTIONS = Counter("quiver_controller_promotions", "In-sync replicas promoted to primary (in a new term) after their primary was gone.")
REPLICAS_MOVED = Counter(
    "quiver_controller_replicas_added", "New replicas the controller placed: in place of a server gone for good, or off a drained one.", ["reason"]
)
IN_SYNC_CHANGES = Counter(
    "quiver_shard_in_sync_changes", "On a primary: replicas dropped from or added back to a shard's in-sync set.", ["change"]
)
SEARCH_LOCK_WAIT_SECONDS = Histogram(
    "quiver_shard_search_lock_wait_seconds",
    "Time a search on a worker thread waited for its partition's index lock (held, or claimed first, by a commit slice).",
    buckets=(0.0001, 0.00025,) + LATENCY_BUCKETS,
)
WRITE_SLICE_HOLD_SECONDS = Histogram(
    "quiver_shard_write_slice_hold_seconds",
    "Time one slice of a commit batch held its partition's index lock, searches shut out meanwhile.",
    buckets=(0.0001, 0.00025,) + LATENCY_BUCKETS,
)
WRITE_VISIBLE_SECONDS = Histogram(
    "quiver_shard_write_visible_seconds",
    "From a write reaching its partition to its points being searchable (logged and applied; the ack follows).",
    buckets=LATENCY_BUCKETS,
)
WATCH_APPLY_SECONDS = Histogram(
    "quiver_cluster_watch_apply_seconds",
    "From an etcd watch event reaching this process to the new cluster snapshot being served (watch lag here).",
    buckets=LATENCY_BUCKETS,
)
SEARCH_ADMISSION_SHARE = Gauge(
    "quiver_router_search_admission_share",
    "The share of a search's budget its expected answer time may fill and be admitted (adapts to missed deadlines).",
)
CLUSTER_REVISION = Gauge("quiver_cluster_state_revision", "etcd revision of the cluster snapshot this process serves from.")
WAL_FSYNC_SECONDS = Histogram(
    "quiver_shard_wal_fsync_duration_seconds", "fsync of a WAL batch (one per group commit).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


class MetricsEndpoint:
    """/metrics over HTTP on a daemon thread, when a port is configured (0 picks a free one)."""

    def __init__(self, port: int | None, host: str = "127.0.0.1") -> None:
        self._port, self._host = port, host
        self._server: Any = None

    @property
    def port(self) -> int | None:
        return int(self._server.server_port) if self._server is not None else None

    def start(self) -> None:
        if self._port is not None and self._server is None:
            self._server, _ = start_http_server(self._port, addr=self._host)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LabelledChildren:
    """A metric's children by label values, kept in a dict. prometheus_client's `labels()` checks and
    locks on every call, and the search path asks for a child several times per query (once per RPC and
    per shard call). Nothing here removes a child, so a cached one is always the one the registry serves."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._by_values: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._by_values.get(values)
        if child is None:
            child = self._by_values[values] = self._metric.labels(*values)
        return child


@functools.cache
def children_of(metric: Any) -> LabelledChildren:
    """The one `LabelledChildren` of `metric` in this process (metrics hash by identity)."""
    return LabelledChildren(metric)


async def timed_call(histogram: Histogram, labels: tuple[str, ...], call: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    try:
        return await call()
    finally:
        children_of(histogram)(*labels).observe(time.perf_counter() - started)


_RPC_REQUESTS = children_of(RPC_REQUESTS)
_RPC_SECONDS = children_of(RPC_SECONDS)


def observe_rpc(service: str, method: str, code: str, seconds: float) -> None:
    _RPC_REQUESTS(service, method, code).inc()
    _RPC_SECONDS(service, method).observe(seconds)


def refused(budget: str) -> None:
    ADMISSION_REFUSALS.labels(budget).inc()


