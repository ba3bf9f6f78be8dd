"""The router's one configuration object, built in `__main__` and passed down."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RouterConfig:
    etcd_endpoints: tuple[str, ...]
    etcd_root: str = "/quiver/"
    host: str = "127.0.0.1"
    port: int = 0
    default_timeout_s: float = 10.0  # used when the caller sets no deadline
    max_k: int = 10_000
    max_queries_per_request: int = 10_000
    max_message_bytes: int = 64 * 2**20
    status_timeout_s: float = 2.0
    # A collection still "being created" this long after its claim was left by a router that died
    # mid-create; a new create of the name takes it over. Longer than any create's own shard timeouts.
    stale_claim_s: float = 180.0
    # Requests with more points (upserts) or query x k slots (search merges) than this do their CPU work in
    # `cpu_threads` worker threads instead of on the event loop.
    offload_points: int = 1024
    cpu_threads: int = 2
    # Admission: searches waiting for their turn to the shards; past it a search is refused at once with
    # RESOURCE_EXHAUSTED and this retry pushback.
    max_queued_searches: int = 1024
    max_batch_queries: int = 256  # queries one coalesced shard request carries at most (a lone request: any)
    # Refuse a search at once when the queue ahead of it would take past its deadline, by the recent batch
    # times. Only while a batch is in flight with others queued behind it, and only on an estimate sampled
    # within `batch_estimate_max_age_s` (one from before a quiet spell could refuse what the shards now serve).
    deadline_admission: bool = True
    batch_estimate_max_age_s: float = 5.0
    # The share of a search's budget its expected answer time may fill and still be admitted, at start (and at
    # most): batch times vary with the load (a burst of writes, another tenant's searches), and a search
    # admitted to finish just in time misses whenever the next batch is slower than the last. It narrows as
    # admitted searches miss their deadlines and widens back as they are answered (`router.admission_share`).
    deadline_admission_share: float = 0.9
    max_concurrent_rpcs: int = 4096  # RPCs being handled at once; past it gRPC answers RESOURCE_EXHAUSTED
    retry_after_s: float = 0.1
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on this port (0: a free one); None: off
    metrics_host: str = "127.0.0.1"
    slow_rpc_s: float = 1.0  # RPCs slower than this are logged at WARNING (the slow-query log)
    # Bytes of upserts accepted but not yet answered by the shards; past it an upsert is refused at once.
    max_queued_write_bytes: int = 256 * 2**20
    # A shard server's retry pushback after it refused a write is honoured at most this long (backpressure).
    max_pushback_hold_s: float = 1.0
    # Run for the controller role (one router at a time holds it): promotes a replica when a primary is gone.
    controller: bool = True
    router_id: str = ""  # this router's name as a controller candidate; "" = host:port
    hedge_reads: bool = True  # send a read to a second replica when the first is slower than its p95
    # The searches of one query or batch that go to one shard server travel as one SearchMany call.
    batch_server_searches: bool = True
    # Node mode: the partitions the shard server of this process holds are searched by one direct call into
    # it (router/local_searches.py), not one replica read and local call apiece.
    search_in_process: bool = True
    # As controller: a replica whose server has been gone this long is rebuilt on another server.
    replace_after_s: float = 60.0
