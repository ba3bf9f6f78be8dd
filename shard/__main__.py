"""`python -m shard` / `quiver-shard`: run one shard server until SIGTERM or Ctrl-C."""
from __future__ import annotations

import quiver.grpc_fork  # noqa: F401 - first, before gRPC loads: its fork handlers off (shard.indexes.forked_call)
import asyncio
import logging
import socket
from pathlib import Path

import click
import uvloop

from quiver.gc_tuning import freeze_startup_heap
from quiver.grpc_server import until_stop_signal
from quiver.logs import configure_logging
from quiver.server_options import config_file_option, log_effective_options, with_environment

from shard.config import ShardConfig
from shard.admission import AdmissionBudgets
from shard.durable_partition import DurabilityPolicy
from shard.executors import WORKER_POLICIES, ExecutorSizes, lower_process_priority
from shard.identity import ServerIdMismatch, resolve_server_id
from shard.partition_state import SearchPolicy
from shard.replication import ReplicationPolicy
from shard.server import ShardServer

_log = logging.getLogger("shard")


def port_and_id(host: str, port: int, data_dir: Path, server_id: str) -> tuple[int, str]:
    """The shard server's port (a free one for 0: picked here, so the address it registers can name it)
    and its id (kept in the data directory; a mismatch is a usage error)."""
    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    try:
        return port, resolve_server_id(data_dir, server_id)
    except ServerIdMismatch as error:
        raise click.UsageError(str(error)) from None


async def serve(config: ShardConfig) -> None:
    server = ShardServer(config)
    await server.start()
    freeze_startup_heap()  # after recovery: what the server holds from here on is not walked by every GC
    if server.metrics.port is not None:
        print(f"quiver-shard metrics on {config.metrics_host}:{server.metrics.port}", flush=True)
    # The line launchers and tests wait for; keep its shape.
    print(f"quiver-shard serving on {server.address} id={config.server_id}", flush=True)
    await until_stop_signal()
    _log.info("shutting down: NOT_SERVING, out of etcd, draining, snapshotting")
    await server.begin_drain()
    if config.etcd_endpoints:
        await server.leave_cluster()
        # Routers stop sending here once their watch sees the lease go; until then, keep answering what
        # arrives (a call refused mid-shutdown would fail a read that another replica could have served).
        await asyncio.sleep(config.drain_delay_s)
    await server.stop(grace=5.0)


@click.command(context_settings={"show_default": True})
@config_file_option
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="Where partitions, WAL and snapshots live.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--etcd", "etcd_endpoints", default="", help="Comma-separated etcd endpoints (host:port); empty = standalone.")
@click.option("--etcd-root", default="/quiver/", show_default=True, help="Key prefix of this cluster's state in etcd.")
@click.option("--replica-ack-timeout-s", default=ReplicationPolicy.ack_timeout_s, show_default=True, help="As a primary: an in-sync replica that has not acknowledged a write this long is dropped from the in-sync set (and catches up later).")
@click.option("--server-id", default="", help="Id in the cluster, kept in the data directory on first start (default: hostname + random); a later start must name the same id or none.")
@click.option("--advertise", default="", help="Address the router dials, if not host:port.")
@click.option("--lease-ttl", default=5.0, show_default=True, help="Seconds until a dead server drops out of etcd.")
@click.option("--etcd-start-wait-s", default=ShardConfig.etcd_start_wait_s, show_default=True, help="At start, retry an unreachable etcd this long before exiting.")
@click.option("--exact-filter-fraction", default=0.02, show_default=True, help="IVF-PQ: filters selecting at most this share of points are searched exactly (HNSW prices each filter instead).")
@click.option("--exact-filter-min-points", default=1024, show_default=True, help="...and so are filters selecting at most this many points.")
@click.option("--max-k", default=ShardConfig.max_k, show_default=True, help="Largest k a search may ask for.")
@click.option("--max-queries-per-request", default=ShardConfig.max_queries_per_request, show_default=True, help="Query vectors one search request may carry.")
@click.option("--max-message-bytes", default=ShardConfig.max_message_bytes, show_default=True, help="Largest gRPC message received or sent.")
@click.option("--wal-segment-bytes", default=DurabilityPolicy.wal_segment_bytes, show_default=True, help="A WAL segment is rolled past this size.")
@click.option("--snapshot-after-wal-bytes", default=DurabilityPolicy.snapshot_after_wal_bytes, show_default=True, help="Snapshot a partition once its WAL grew this much since the last snapshot.")
@click.option("--snapshot-interval-s", default=DurabilityPolicy.snapshot_interval_s, show_default=True, help="...or this long after it, if it changed.")
@click.option("--snapshots-kept", default=DurabilityPolicy.snapshots_kept, show_default=True, help="Snapshots kept per partition (the older ones are the fallback when the newest is damaged).")
@click.option("--max-batch-writes", default=DurabilityPolicy.max_batch_writes, show_default=True, help="Writes grouped into one WAL fsync at most (group commit).")
@click.option("--commit-yield-ratio", default=DurabilityPolicy.commit_yield_ratio, show_default=True, help="While searches are in flight, the commit thread rests this many times as long as each write slice held the index lock (writes then take at most 1/(1+ratio) of a core from searches); 0: no rest.")
@click.option("--compact-lists-after-idle-s", default=DurabilityPolicy.compact_lists_after_idle_s, show_default=True, help="IVF-PQ: once writes have been quiet this long (and 1% of the index changed since the last time), copy its inverted lists to their exact size, dropping faiss's doubling slack; 0: never.")
@click.option("--min-free-bytes", default=DurabilityPolicy.min_free_bytes, show_default=True, help="Writes are refused (RESOURCE_EXHAUSTED) unless this much stays free on the data volume after them.")
@click.option("--fault-retry-s", default=DurabilityPolicy.fault_retry_s, show_default=True, help="How often a partition made read-only by a log I/O error tries to recover (on a write).")
@click.option("--queued-write-bytes", default=AdmissionBudgets.queued_write_bytes, show_default=True, help="Budget of writes accepted but not yet answered; past it, writes are refused with RESOURCE_EXHAUSTED.")
@click.option("--queries-in-flight", default=AdmissionBudgets.queries_in_flight, show_default=True, help="Budget of query vectors being searched at once; past it, searches are refused with RESOURCE_EXHAUSTED.")
@click.option("--max-concurrent-rpcs", default=4096, show_default=True, help="RPCs handled at once; past it, gRPC refuses with RESOURCE_EXHAUSTED before any work.")
@click.option("--search-threads", default=0, show_default=True, help="Threads for searches (0: one per core). A number set also caps the threads one HNSW search batch uses inside hnswlib (otherwise every core): servers sharing a machine can split its cores.")
@click.option("--index-build-threads", default=ExecutorSizes.index_builds, show_default=True, help="Threads for IVF-PQ training.")
@click.option("--worker-nice", default=ExecutorSizes.worker_nice, show_default=True, help="Nice increment for search, commit and index-build threads; set it where routers or clients share these cores (keeps admission refusals prompt under CPU saturation).")
@click.option("--worker-policy", type=click.Choice(list(WORKER_POLICIES)), default=ExecutorSizes.worker_policy, show_default=True, help="Scheduling policy of search, commit and index-build threads: idle (Linux SCHED_IDLE) runs them only on cores no normal thread wants, so co-located routers and clients, and this server's own event loop, are never kept waiting by index work.")
@click.option("--nice", "process_nice", default=ShardConfig.process_nice, show_default=True, help="Nice increment for the whole server at start (event loop included), where a router shares these cores: its answers, refusals included, then come first.")
@click.option("--commit-nice", default=ExecutorSizes.commit_nice, show_default=True, help="Further nice increment for each partition's commit thread (writes' index work), so searches come first when both want the cores.")
@click.option("--malloc-mmap-threshold-bytes", default=ShardConfig.malloc_mmap_threshold_bytes, show_default=True, help="Allocations this large get their own mapping, returned to the OS when freed (glibc M_MMAP_THRESHOLD, fixed; 0: glibc's dynamic default). Keeps freed batch and snapshot buffers from staying resident.")
@click.option("--drain-delay", default=1.0, show_default=True, help="On SIGTERM: seconds between leaving etcd and refusing new calls (routers move away meanwhile).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus /metrics over HTTP on this port (default: off).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address /metrics listens on (0.0.0.0 in a container).")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG logs every RPC with its request id and time.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True, help="JSON lines (one event per line) or plain text.")
@click.option("--slow-rpc-ms", default=1000.0, show_default=True, help="RPCs slower than this are logged at WARNING (the slow-query log).")
def main(
    data_dir: Path, host: str, port: int, etcd_endpoints: str, etcd_root: str, replica_ack_timeout_s: float, server_id: str, advertise: str, lease_ttl: float,
    etcd_start_wait_s: float, exact_filter_fraction: float, exact_filter_min_points: int, max_k: int, max_queries_per_request: int,
    max_message_bytes: int, wal_segment_bytes: int, snapshot_after_wal_bytes: int, snapshot_interval_s: float,
    snapshots_kept: int, max_batch_writes: int, commit_yield_ratio: float, compact_lists_after_idle_s: float, min_free_bytes: int, fault_retry_s: float,
    queued_write_bytes: int, queries_in_flight: int, max_concurrent_rpcs: int, search_threads: int, index_build_threads: int, worker_nice: int, worker_policy: str, commit_nice: int, process_nice: int,
    malloc_mmap_threshold_bytes: int, drain_delay: float, metrics_port: int | None, metrics_host: str, log_level: str, log_format: str, slow_rpc_ms: float,
) -> None:
    configure_logging(log_level, log_format)
    log_effective_options(click.get_current_context())
    port, server_id = port_and_id(host, port, data_dir, server_id)
    config = ShardConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        etcd_endpoints=tuple(e for e in etcd_endpoints.split(",") if e),
        etcd_root=etcd_root,
        replication=ReplicationPolicy(ack_timeout_s=replica_ack_timeout_s),
        server_id=server_id,
        advertise_address=advertise,
        lease_ttl_s=lease_ttl,
        etcd_start_wait_s=etcd_start_wait_s,
        max_k=max_k,
        max_queries_per_request=max_queries_per_request,
        max_message_bytes=max_message_bytes,
        durability=DurabilityPolicy(
            wal_segment_bytes=wal_segment_bytes, snapshot_after_wal_bytes=snapshot_after_wal_bytes,
            snapshot_interval_s=snapshot_interval_s, snapshots_kept=snapshots_kept, max_batch_writes=max_batch_writes,
            min_free_bytes=min_free_bytes, fault_retry_s=fault_retry_s, commit_yield_ratio=commit_yield_ratio,
            compact_lists_after_idle_s=compact_lists_after_idle_s,
        ),
        max_concurrent_rpcs=max_concurrent_rpcs,
        admission=AdmissionBudgets(queued_write_bytes=queued_write_bytes, queries_in_flight=queries_in_flight),
        executors=ExecutorSizes(searches=search_threads, index_builds=index_build_threads, worker_nice=worker_nice, commit_nice=commit_nice, worker_policy=worker_policy),
        search=SearchPolicy(exact_filter_fraction=exact_filter_fraction, exact_filter_min_points=exact_filter_min_points),
        drain_delay_s=drain_delay,
        malloc_mmap_threshold_bytes=malloc_mmap_threshold_bytes,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        slow_rpc_s=slow_rpc_ms / 1e3,
        process_nice=process_nice,
    )
    lower_process_priority(config.process_nice)
    uvloop.run(serve(config))


with_environment(main, "QUIVER_SHARD")

if __name__ == "__main__":
    main()
