"""The shard server's one configuration object, built in `__main__` and passed down."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shard.admission import AdmissionBudgets
from shard.durable_partition import DurabilityPolicy
from shard.executors import ExecutorSizes
from shard.partition_state import SearchPolicy
from shard.replication import ReplicationPolicy


@dataclass(frozen=True)
class ShardConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    max_k: int = 10_000
    max_message_bytes: int = 64 * 2**20
    max_queries_per_request: int = 10_000
    max_concurrent_rpcs: int = 4096  # RPCs handled at once; past it gRPC answers RESOURCE_EXHAUSTED itself
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on this port (0: a free one); None: off
    metrics_host: str = "127.0.0.1"
    drain_delay_s: float = 1.0  # on SIGTERM: serving on, out of etcd, this long before new calls are refused
    slow_rpc_s: float = 1.0  # RPCs slower than this are logged at WARNING (the slow-query log)
    offload_points: int = 1024  # requests with more points or queries are decoded off the event loop
    durability: DurabilityPolicy = field(default_factory=DurabilityPolicy)
    search: SearchPolicy = field(default_factory=SearchPolicy)
    executors: ExecutorSizes = field(default_factory=ExecutorSizes)
    admission: AdmissionBudgets = field(default_factory=AdmissionBudgets)
    etcd_endpoints: tuple[str, ...] = ()  # empty: run standalone, not registered in a cluster
    etcd_root: str = "/quiver/"
    replication: ReplicationPolicy = field(default_factory=ReplicationPolicy)
    server_id: str = ""
    lease_ttl_s: float = 5.0
    # At start, etcd unreachable (restarting, or slow to answer) is retried this long before giving up.
    etcd_start_wait_s: float = 60.0
    advertise_address: str = ""  # address the router dials; defaults to host:port
    # Allocations this large or larger are mapped on their own and returned to the OS when freed (glibc's
    # M_MMAP_THRESHOLD, fixed: see shard.heap_release); 0 leaves glibc's dynamic threshold.
    malloc_mmap_threshold_bytes: int = 4 * 2**20
    # Added to the whole process's nice value at start (every thread inherits it, the event loop's included):
    # where a router shares this machine's cores (a local cluster, a small node), its event loop, and so its
    # prompt refusals under overload, come before this server's work. Worker threads go lower still.
    process_nice: int = 0
