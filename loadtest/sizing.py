"""Capacity planning arithmetic: how much RAM, disk, how many shards and nodes a collection needs.

`plan` is a pure function of a `SizingInput` (the collection and the hardware) and `Coefficients`
(factors measured on a real machine, kept in loadtest/calibration.json). Byte counts that follow
from the index layouts are exact; everything that depends on allocators, CPUs or recall targets
comes from the coefficients and is only as good as their calibration.

Memory, per vector, one replica (d = dim):
- flat: 4d (faiss IndexFlat keeps the float32 vectors and nothing else).
- hnsw (hnswlib): level 0 holds, per element, the vector (4d), a link count and 2M links
  (4 + 8M) and the label (8). An element reaches level l with probability M^-l, so it carries
  1/(M-1) upper-level link lists of 4 + 4M bytes on average. Bookkeeping beyond that (level
  array, list pointer, per-element mutex, label map, visited lists) is a calibrated overhead.
  Per shard, hnswlib's 65,536 label locks are a fixed cost.
- ivf_pq (faiss): ceil(pq_m * pq_nbits / 8) code bytes and an 8-byte id in the inverted lists,
  plus calibrated list slack (std::vector growth) as a fraction of both; refine adds the 4d
  float32 vectors. Per shard: nlist coarse centroids (4d each), the PQ codebooks (2^nbits * 4d)
  and, where faiss builds it (metric l2 only, table <= 2 GiB), the precomputed table nlist*pq_m*2^nbits*4.
Every point also costs metadata_bytes_per_point and id_bytes_per_point (its id's own bytes).

The served system (coefficients from `quiver-loadtest calibrate-served`, per kind: `*_served_measured`): a shard server
holds more than its index, and a query or a write costs more than the library call. Then memory is the
shard process's own (anonymous) resident memory: the index as above, plus a calibrated
`*_served_bytes_per_point` (the id map's offsets and hashes, metadata columns, liveness, allocator), plus
one empty shard process per node (`shard_process_bytes`). A served ivf_pq shard copies its lists to their
exact size once writes go quiet (shard/indexes/ivf_lists.py), so its plan has no list slack at rest; the
slack its lists carry while writes go on is planned beside it (`ingest_list_slack_bytes`, not in the RAM
total, a note when it would not fit the node). hnsw's raw-vector copy beside the graph (4d, for
exact scoring and snapshots) is a memory-mapped file that searches do not touch: it is counted on disk, and
what of it the page cache holds is the kernel's to reclaim (flat's vectors are its index, searched whole,
so they stay in RAM). A query costs a shard
replica `*_served_index_cost_factor` times the bare index's search (served searches run beside gRPC and
each other, and miss caches the bare loop keeps warm) plus `*_served_request_core_s` (gRPC, protobuf,
filters, merging), and the router `router_core_s_per_query`; a point ingested through the router costs `*_served_ingest_core_s_per_point`
(router split, WAL, id map, metadata) on top of the index's add. Without served coefficients for the
plan's kind, all of that is zero and the plan is of the bare index.

Disk, per shard replica: the shard server keeps SNAPSHOTS_KEPT snapshots and writes the next beside them
before it prunes, so SNAPSHOTS_KEPT + 1 at the peak; the WAL back to the oldest kept snapshot; and hnsw's
raw-vector file. A snapshot holds the index's exact layout (not the allocator's slack), the ids, the
metadata and, served, hnsw's raw-vector copy again; `*_served_snapshot_extra_bytes_per_point` adds
what the measured snapshots held beyond that estimate where calibrate-served measured it.

Throughput: every query visits one replica of every shard. A shard replica with a node's cores
to itself serves node_cores / (1 / qps_per_core + served request cost), where qps_per_core is calibrated at a reference size
and scaled with the shard size: ~1/(n*d) for flat, ~1/(log n * d) for hnsw, and for ivf_pq
~1/(nlist*d + nprobe*2^nbits*d + n/nlist*nprobe*pq_m) (coarse search, distance tables, list
scan). Replicas of a shard share its load; the cluster's cores serve shards * (a replica's CPU per
query) + the router's CPU per query for each query (routers run on the same nodes), and the busiest
node sets the cluster's QPS. The shard count is the larger of the count that fits RAM and the smallest
count whose smaller shards can reach the target QPS (with one shard replica per node); then the node
count is the smallest that both holds the shard replicas in RAM and reaches the target with the
routers' CPU counted, with the replicas of one shard on distinct nodes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path

INDEX_KINDS = ("flat", "hnsw", "ivf_pq")
KIND_PREFIX = {"flat": "flat", "hnsw": "hnsw", "ivf_pq": "ivfpq"}  # coefficient names' prefix per kind

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration.json")

# hnswlib: MAX_LABEL_OPERATION_LOCKS std::mutex objects (40 bytes each with glibc on x86-64).
HNSWLIB_LABEL_LOCK_BYTES = 65_536 * 40
# faiss IVF-PQ: the ids in ArrayInvertedLists are idx_t.
FAISS_ID_BYTES = 8
# faiss builds the IVF-PQ precomputed table only up to precomputed_table_max_bytes (default).
FAISS_PRECOMPUTED_TABLE_MAX_BYTES = 1 << 31
METRICS = ("cosine", "ip", "l2")
# A WAL record: the float32 vector, id, metadata and a small frame (length, crc, op, sequence).
WAL_FRAME_BYTES = 16
# shard.durable_partition.DurabilityPolicy.snapshots_kept: kept snapshots, the WAL kept back to the oldest.
SNAPSHOTS_KEPT = 2


@dataclass(frozen=True, kw_only=True)
class SizingInput:
    """A collection and the nodes it should run on."""

    vectors: int
    dim: int
    index_kind: str
    hnsw_m: int = 16
    ivf_nlist: int = 65_536
    ivf_nprobe: int = 32
    pq_m: int = 64
    pq_nbits: int = 8
    refine: bool = False
    # faiss builds IVF-PQ's precomputed table (nlist * pq_m * 2^nbits floats) for l2 only; cosine and ip search
    # by inner product and need none. Quiver's default metric is cosine.
    metric: str = "cosine"
    replication_factor: int = 1
    metadata_bytes_per_point: int = 0
    id_bytes_per_point: int = 40  # each id's own UTF-8 bytes; the id map's structure is a served coefficient
    target_qps: float = 0.0
    node_ram_bytes: int
    node_cores: int
    ram_headroom: float = 0.7
    # Share of the collection that may be rewritten between two snapshots (sizes the WAL).
    wal_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.index_kind not in INDEX_KINDS:
            raise ValueError(f"index_kind must be one of {INDEX_KINDS}, got {self.index_kind!r}")
        for field in ("vectors", "dim", "hnsw_m", "ivf_nlist", "ivf_nprobe", "pq_m", "pq_nbits",
                      "replication_factor", "node_ram_bytes", "node_cores"):
            operator.index(getattr(self, field))  # 1e10 is a float: byte counts must stay exact ints
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        for field in ("metadata_bytes_per_point", "id_bytes_per_point", "target_qps", "wal_fraction"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.hnsw_m < 2:
            raise ValueError(f"hnsw_m must be >= 2, got {self.hnsw_m}")
        if self.index_kind == "ivf_pq":
            if self.dim % self.pq_m:
                raise ValueError(f"pq_m={self.pq_m} must divide dim={self.dim} (faiss requires it)")
            if self.pq_nbits > 16:
                raise ValueError(f"pq_nbits must be in 1..16, got {self.pq_nbits}")
            if self.ivf_nprobe > self.ivf_nlist:
                raise ValueError(f"ivf_nprobe={self.ivf_nprobe} exceeds ivf_nlist={self.ivf_nlist}")
        if not 0 < self.ram_headroom <= 1:
            raise ValueError(f"ram_headroom must be in (0, 1], got {self.ram_headroom}")


@dataclass(frozen=True, kw_only=True)
class Coefficients:
    """Machine-dependent factors. The defaults are estimates; calibration.json says which."""

    machine: str = "estimate (no machine measured)"
    measured: bool = False
    notes: str = ""
    # Reference point at which the per-core rates below hold.
    ref_vectors: int = 1_000_000
    ref_dim: int = 128
    ref_ivf_nlist: int = 4096
    ref_ivf_nprobe: int = 16
    ref_pq_m: int = 16
    ref_pq_nbits: int = 8
    # Memory beyond what the layouts make exact.
    hnsw_overhead_bytes_per_vector: float = 108.0
    ivfpq_list_slack_fraction: float = 0.25
    # Build cost (core-seconds per vector at the reference point).
    flat_build_core_s_per_vector: float = 2e-8
    hnsw_build_core_s_per_vector: float = 1e-3
    ivfpq_build_core_s_per_vector: float = 6e-5
    # Single-query search throughput per core at the reference point.
    flat_qps_per_core: float = 20.0
    hnsw_qps_per_core: float = 3000.0
    ivfpq_qps_per_core: float = 2000.0
    # How hnsw's costs grow with the shard's size n: a query's and a point's add as (n / ref)^exponent, fitted
    # over the calibration's sizes (a graph past the CPU caches costs more than its log n hops say). 0: log n.
    hnsw_qps_size_exponent: float = 0.0
    hnsw_build_size_exponent: float = 0.0
    # The served system (see the module docstring); zero until `calibrate-served` measures it. Per kind:
    # whether it was measured, and whether the plan then held within tolerance at sizes the fit did not see.
    served_notes: str = ""
    flat_served_measured: bool = False
    hnsw_served_measured: bool = False
    ivfpq_served_measured: bool = False
    flat_served_validated: bool = False
    hnsw_served_validated: bool = False
    ivfpq_served_validated: bool = False
    # The served calibration's index parameters: its per-shard intercepts are scaled from these.
    served_ref_dim: int = 128
    served_ref_ivf_nlist: int = 4096
    shard_process_bytes: float = 0.0
    flat_served_bytes_per_point: float = 0.0
    hnsw_served_bytes_per_point: float = 0.0
    ivfpq_served_bytes_per_point: float = 0.0
    flat_served_request_core_s: float = 0.0
    hnsw_served_request_core_s: float = 0.0
    ivfpq_served_request_core_s: float = 0.0
    flat_served_index_cost_factor: float = 1.0
    hnsw_served_index_cost_factor: float = 1.0
    ivfpq_served_index_cost_factor: float = 1.0
    router_core_s_per_query: float = 0.0
    flat_served_ingest_core_s_per_point: float = 0.0
    hnsw_served_ingest_core_s_per_point: float = 0.0
    ivfpq_served_ingest_core_s_per_point: float = 0.0
    # Per shard: what a served shard holds beyond the index's fixed structures (IVF-PQ keeps much of its
    # training's working memory), and the ingest's fixed CPU (IVF-PQ's training).
    flat_served_fixed_bytes: float = 0.0
    hnsw_served_fixed_bytes: float = 0.0
    ivfpq_served_fixed_bytes: float = 0.0
    flat_served_ingest_fixed_core_s: float = 0.0
    hnsw_served_ingest_fixed_core_s: float = 0.0
    ivfpq_served_ingest_fixed_core_s: float = 0.0
    # A snapshot's bytes per point beyond the layout's estimate (see the module docstring), measured.
    flat_served_snapshot_extra_bytes_per_point: float = 0.0
    hnsw_served_snapshot_extra_bytes_per_point: float = 0.0
    ivfpq_served_snapshot_extra_bytes_per_point: float = 0.0

    def served(self, kind: str, what: str) -> float:
        """A served coefficient of `kind`: what = "bytes_per_point", "fixed_bytes", "request_core_s",
        "index_cost_factor", "ingest_core_s_per_point", "ingest_fixed_core_s" or "snapshot_extra_bytes_per_point"."""
        return float(getattr(self, f"{KIND_PREFIX[kind]}_served_{what}"))

    def is_served(self, kind: str) -> bool:
        """Whether calibrate-served measured `kind` (else its plans are of the bare index)."""
        return bool(getattr(self, f"{KIND_PREFIX[kind]}_served_measured"))

    def served_validated(self, kind: str) -> bool:
        return bool(getattr(self, f"{KIND_PREFIX[kind]}_served_validated"))

    @property
    def served_kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in INDEX_KINDS if self.is_served(kind))


@dataclass(frozen=True, kw_only=True)
class SizingPlan:
    """What `plan` works out. Byte totals are for one replica unless named otherwise."""

    input: SizingInput
    coefficients_measured: bool
    coefficients_served: bool
    coefficients_machine: str
    # Per vector.
    index_bytes_per_vector: float
    bytes_per_point: float
    # One replica, by component.
    vector_bytes: int
    code_bytes: int
    label_bytes: int
    graph_bytes: int
    overhead_bytes: int
    fixed_bytes: int
    index_bytes: int
    metadata_bytes: int
    id_map_bytes: int
    served_bytes: int  # the shard's own structures beyond the index, ids and metadata (0: bare index)
    shard_process_bytes: int  # one empty shard server process, per node
    raw_vector_file_bytes: int  # hnsw's raw-vector copy, memory-mapped (on disk; page cache as it is read)
    replica_ram_bytes: int
    cluster_ram_bytes: int
    # Sharding and placement.
    shards_for_ram: int
    shards_for_qps: int
    shards: int
    vectors_per_shard: int
    shard_ram_bytes: int
    node_ram_budget_bytes: int
    shard_replicas_per_node: int
    nodes: int
    # Disk.
    snapshot_bytes: int  # one snapshot of every shard (a node holds SNAPSHOTS_KEPT + 1 of each of its shards at the peak)
    wal_bytes: int  # the WAL kept back to the oldest kept snapshot
    disk_bytes_per_node: int
    # Time and throughput.
    build_core_seconds: float
    build_wall_seconds: float
    qps_per_shard_replica: float
    shard_core_s_per_query: float  # one shard replica's CPU for one query: the index's search + the served request
    router_core_s_per_query: float
    qps_per_node: float
    cluster_qps: float
    meets_target_qps: bool
    notes: tuple[str, ...]
    # A served ivf_pq shard's lists while writes go on, beyond their exact size (compacted when writes go quiet).
    ingest_list_slack_bytes: int = 0


def plan(inp: SizingInput, coeffs: Coefficients) -> SizingPlan:
    """Work out memory, shards, nodes, disk, build time and throughput for `inp`."""
    # IVF lists' resident slack depends on how long a shard's lists are, which depends on how many shards
    # the memory needs: from one shard, re-plan at the shard size planned until it holds (a few passes:
    # more shards, shorter lists, more slack per point, never fewer shards).
    vectors_per_shard = inp.vectors
    for _ in range(8):
        result = _plan(inp, coeffs, vectors_per_shard)
        if inp.index_kind != "ivf_pq" or result.vectors_per_shard == vectors_per_shard:
            break
        vectors_per_shard = result.vectors_per_shard
    return result


def _plan(inp: SizingInput, coeffs: Coefficients, layout_vectors_per_shard: int) -> SizingPlan:
    kind = inp.index_kind
    served = coeffs.is_served(kind)
    layout = _layout(inp, coeffs, layout_vectors_per_shard, compacted=served)
    # A served hnsw shard keeps each raw vector beside the graph (exact scoring, snapshots) in a mapped file.
    raw_vector_file = 4 * inp.dim if served and kind == "hnsw" else 0
    served_fractional = coeffs.served(kind, "bytes_per_point") if served else 0.0
    point_exact = layout.exact_per_vector + inp.metadata_bytes_per_point + inp.id_bytes_per_point
    # A served fit on noisy small measurements can take off more than the layout's fractional bytes (RSS that
    # shrank between two sizes); a point still holds at least its exact bytes.
    point_fractional = max(0.0, layout.fractional_per_vector + served_fractional)
    per_point = point_exact + point_fractional
    process_bytes = math.ceil(coeffs.shard_process_bytes) if served else 0
    memory_scale, training_scale = _served_intercept_scales(inp, coeffs)
    served_fixed = max(0, math.ceil(coeffs.served(kind, "fixed_bytes") * memory_scale)) if served else 0
    fixed_per_shard = layout.fixed_per_shard + served_fixed
    budget = math.floor(inp.ram_headroom * inp.node_ram_bytes) - process_bytes
    notes: list[str] = []

    def shard_bytes(n: int) -> int:
        return fixed_per_shard + _total(n, point_exact, point_fractional)

    room = budget - fixed_per_shard
    if room < per_point:
        raise ValueError(f"a node's RAM budget of {budget} bytes cannot hold one shard's fixed "
                         f"structures ({fixed_per_shard} bytes) and a vector")
    shards_for_ram = math.ceil(inp.vectors / math.floor(room / per_point))
    while shard_bytes(math.ceil(inp.vectors / shards_for_ram)) > budget:
        shards_for_ram += 1  # float rounding in room / per_point; at most a step or two

    request_core_s = coeffs.served(kind, "request_core_s") if served else 0.0
    index_cost_factor = coeffs.served(kind, "index_cost_factor") if served else 1.0
    router_core_s = coeffs.router_core_s_per_query if served else 0.0
    rf = inp.replication_factor

    def query_core_s(shards: int) -> float:
        return index_cost_factor / _qps_per_core(inp, coeffs, math.ceil(inp.vectors / shards)) + request_core_s

    def replica_qps(shards: int) -> float:
        return inp.node_cores / query_core_s(shards)

    def cluster_qps_of(shards: int, nodes: int) -> float:
        # The busiest node's cores serve its shard replicas' share of every query plus its share of the routing.
        per_node = math.ceil(shards * rf / nodes)
        return 1.0 / (per_node / (rf * replica_qps(shards)) + router_core_s / (nodes * inp.node_cores))

    def meets(shards: int) -> bool:  # with every shard replica on a node of its own, the most `shards` can give
        return cluster_qps_of(shards, shards * rf) >= inp.target_qps

    if meets(shards_for_ram):
        shards_for_qps = shards_for_ram
    elif not meets(inp.vectors):
        shards_for_qps = shards_for_ram
        # With one shard replica per node, QPS = rf / (a query's shard CPU / cores + router CPU / (shards * cores)).
        per_replica_set = query_core_s(shards_for_ram) / inp.node_cores + router_core_s / (shards_for_ram * inp.node_cores)
        notes.append(f"target {inp.target_qps:g} QPS is out of reach by sharding alone; at "
                     f"{shards_for_ram} shards it needs replication_factor >= "
                     f"{math.ceil(inp.target_qps * per_replica_set)}")
    else:
        low, high = shards_for_ram, inp.vectors  # meets(low) is false, meets(high) true
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if meets(mid) else (mid, high)
        shards_for_qps = high
        notes.append(f"{shards_for_qps} shards to reach {inp.target_qps:g} QPS ({shards_for_ram} would fit "
                     "RAM); for hnsw and ivf_pq a higher replication_factor is often cheaper")
    shards = max(shards_for_ram, shards_for_qps)
    vectors_per_shard = math.ceil(inp.vectors / shards)
    shard_ram = shard_bytes(vectors_per_shard)

    qps_replica = replica_qps(shards)
    slots = max(1, budget // shard_ram)
    nodes = max(rf, math.ceil(shards * rf / slots))
    if inp.target_qps > 0 and cluster_qps_of(shards, nodes) < inp.target_qps <= cluster_qps_of(shards, shards * rf):
        # Fewer shard replicas per node (and more cores for routing): the fewest nodes that reach the target.
        low, high = nodes, shards * rf  # cluster_qps_of grows with nodes
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if cluster_qps_of(shards, mid) >= inp.target_qps else (mid, high)
        nodes = high
    per_node = math.ceil(shards * rf / nodes)
    cluster_qps = cluster_qps_of(shards, nodes)

    wal_record = 4 * inp.dim + inp.id_bytes_per_point + inp.metadata_bytes_per_point + WAL_FRAME_BYTES
    # The WAL is kept back to the oldest kept snapshot: SNAPSHOTS_KEPT intervals of rewrites.
    shard_wal = SNAPSHOTS_KEPT * math.ceil(inp.wal_fraction * vectors_per_shard) * wal_record
    fixed = shards * fixed_per_shard
    index = _total(inp.vectors, layout.exact_per_vector, layout.fractional_per_vector) + fixed
    replica = _total(inp.vectors, point_exact, point_fractional) + fixed
    snapshot_per_point = max(0.0, _snapshot_estimate_bytes_per_point(inp, layout, raw_vector_file)
                             + (coeffs.served(kind, "snapshot_extra_bytes_per_point") if served else 0.0))
    shard_snapshot = math.ceil(vectors_per_shard * snapshot_per_point) + layout.fixed_per_shard
    build_per_vector = _build_core_s_per_vector(inp, coeffs, vectors_per_shard)
    ingest_fixed_core_s = max(0.0, coeffs.served(kind, "ingest_fixed_core_s") * training_scale) if served else 0.0
    if served:
        build_per_vector += coeffs.served(kind, "ingest_core_s_per_point")

    if kind == "ivf_pq" and vectors_per_shard < 39 * inp.ivf_nlist:
        notes.append(f"{vectors_per_shard} vectors per shard is under 39 * nlist = {39 * inp.ivf_nlist} "
                     "training points; consider a smaller ivf_nlist")
    ingest_slack = 0
    if served and kind == "ivf_pq":
        ingest_slack = _total(inp.vectors, 0, _layout(inp, coeffs, vectors_per_shard).overhead)
        slack_per_shard = math.ceil(ingest_slack / shards)
        if per_node * (shard_ram + slack_per_shard) + process_bytes > inp.node_ram_bytes:
            notes.append(f"while writes go on, each shard's IVF lists hold up to {_bytes(slack_per_shard)} more until "
                         "they are compacted (writes quiet for a few seconds): more than a node's RAM beyond the budget")
    if not coeffs.measured:
        notes.append("coefficients are estimates, not measured: treat time and QPS as rough")
    if not served:
        notes.append(f"no served calibration of {kind}: this plans the bare index, not shard processes behind a "
                     "router (run `quiver-loadtest calibrate-served`)")
    else:
        if not coeffs.served_validated(kind):
            notes.append(f"the served calibration of {kind} missed its validation at sizes it was not fitted on "
                         "(the calibration file's served_notes say by how much): treat its served figures as rough")
        if (memory_scale, training_scale) != (1.0, 1.0) and kind == "ivf_pq":
            notes.append(f"the served per-shard memory ({served_fixed:,} bytes) and training CPU "
                         f"({ingest_fixed_core_s:,.1f} core-s) are scaled from nlist={coeffs.served_ref_ivf_nlist}, "
                         f"d={coeffs.served_ref_dim} as nlist*d and nlist^2*d: a model, not measured at these parameters")

    return SizingPlan(
        input=inp,
        coefficients_measured=coeffs.measured,
        coefficients_served=served,
        coefficients_machine=coeffs.machine,
        index_bytes_per_vector=layout.per_vector,
        bytes_per_point=per_point,
        vector_bytes=inp.vectors * layout.vector_bytes,
        code_bytes=inp.vectors * layout.code_bytes,
        label_bytes=inp.vectors * layout.label_bytes,
        graph_bytes=_total(inp.vectors, layout.graph_exact, layout.graph_fractional),
        overhead_bytes=_total(inp.vectors, 0, layout.overhead),
        fixed_bytes=fixed,
        index_bytes=index,
        metadata_bytes=inp.vectors * inp.metadata_bytes_per_point,
        id_map_bytes=inp.vectors * inp.id_bytes_per_point,
        served_bytes=_total(inp.vectors, 0, served_fractional),
        raw_vector_file_bytes=inp.vectors * raw_vector_file,
        shard_process_bytes=process_bytes,
        replica_ram_bytes=replica,
        cluster_ram_bytes=replica * inp.replication_factor,
        shards_for_ram=shards_for_ram,
        shards_for_qps=shards_for_qps,
        shards=shards,
        vectors_per_shard=vectors_per_shard,
        shard_ram_bytes=shard_ram,
        node_ram_budget_bytes=budget,
        shard_replicas_per_node=per_node,
        nodes=nodes,
        snapshot_bytes=shards * shard_snapshot,
        wal_bytes=shards * shard_wal,
        # The kept snapshots and the next one being written, the WAL, the raw-vector file.
        disk_bytes_per_node=per_node * ((SNAPSHOTS_KEPT + 1) * shard_snapshot + shard_wal + vectors_per_shard * raw_vector_file),
        build_core_seconds=inp.vectors * build_per_vector + shards * ingest_fixed_core_s,
        build_wall_seconds=per_node * (vectors_per_shard * build_per_vector + ingest_fixed_core_s) / inp.node_cores,
        qps_per_shard_replica=qps_replica,
        shard_core_s_per_query=query_core_s(shards),
        router_core_s_per_query=router_core_s,
        qps_per_node=qps_replica / per_node,
        cluster_qps=cluster_qps,
        meets_target_qps=cluster_qps >= inp.target_qps,
        notes=tuple(notes),
        ingest_list_slack_bytes=ingest_slack,
    )


def format_plan(p: SizingPlan) -> str:
    """A two-column table of the plan, sizes in decimal units with exact bytes alongside."""
    inp = p.input
    kind = inp.index_kind
    if kind == "hnsw":
        kind += f" (M={inp.hnsw_m})"
    elif kind == "ivf_pq":
        kind += (f" (nlist={inp.ivf_nlist}, nprobe={inp.ivf_nprobe}, m={inp.pq_m}, nbits={inp.pq_nbits}"
                 f"{', refine' if inp.refine else ''})")
    rows: list[tuple[str, str]] = [
        ("collection", f"{inp.vectors:,} x {inp.dim}-d float32, {kind}"),
        ("coefficients", f"{p.coefficients_machine} ({'measured' if p.coefficients_measured else 'ESTIMATES'}"
                         f"{', served system' if p.coefficients_served else ', bare index only'})"),
        ("index bytes / vector", f"{p.index_bytes_per_vector:,.2f}"),
        ("bytes / point (+metadata, id map)", f"{p.bytes_per_point:,.2f}"),
    ]
    for label, value in (
        ("float32 vectors", p.vector_bytes),
        ("PQ codes", p.code_bytes),
        ("index labels / ids", p.label_bytes),
        ("graph links", p.graph_bytes),
        ("calibrated overhead", p.overhead_bytes),
        ("per-shard fixed structures", p.fixed_bytes),
        ("index total", p.index_bytes),
        ("metadata", p.metadata_bytes),
        ("ids", p.id_map_bytes),
        ("shard structures (served)", p.served_bytes),
        ("RAM, one replica", p.replica_ram_bytes),
        (f"RAM, all {inp.replication_factor} replica(s)", p.cluster_ram_bytes),
        ("+ IVF list slack while ingesting", p.ingest_list_slack_bytes),
    ):
        if value or label.startswith(("index total", "RAM")):
            rows.append((label, _bytes(value) + (" (not in the RAM above: the lists are compacted once writes go quiet)"
                                                  if label.startswith("+ IVF") else "")))
    rows += [
        ("node RAM budget", f"{_bytes(p.node_ram_budget_bytes)} ({inp.ram_headroom:.0%} of {_bytes(inp.node_ram_bytes)}"
                            + (f", less a shard server process's {_bytes(p.shard_process_bytes)}" if p.shard_process_bytes else "") + ")"),
        ("shards (for RAM / for QPS)", f"{p.shards:,} ({p.shards_for_ram:,} / {p.shards_for_qps:,})"),
        ("vectors / shard", f"{p.vectors_per_shard:,}"),
        ("RAM / shard", _bytes(p.shard_ram_bytes)),
        ("shard replicas / node", f"{p.shard_replicas_per_node}"),
        ("nodes", f"{p.nodes:,} ({inp.node_cores} cores each)"),
        ("disk: one snapshot, one replica", _bytes(p.snapshot_bytes)),
        ("disk: WAL allowance, one replica", _bytes(p.wal_bytes)),
        *((("disk: raw-vector files, one replica", _bytes(p.raw_vector_file_bytes)),) if p.raw_vector_file_bytes else ()),
        (f"disk / node ({SNAPSHOTS_KEPT + 1} snapshots at the peak, WAL, files)", _bytes(p.disk_bytes_per_node)),
        ("build, core-seconds (one replica)", f"{p.build_core_seconds:,.0f}"),
        ("build, wall clock (shards in parallel)", _duration(p.build_wall_seconds)),
        ("CPU / query: shard replica, router", f"{p.shard_core_s_per_query * 1e3:,.3f} ms, {p.router_core_s_per_query * 1e3:,.3f} ms"),
        ("QPS / shard replica (whole node)", f"{p.qps_per_shard_replica:,.1f}"),
        ("QPS / node", f"{p.qps_per_node:,.1f}"),
        ("cluster QPS", f"{p.cluster_qps:,.1f} (target {inp.target_qps:,.1f}: "
                        f"{'met' if p.meets_target_qps else 'NOT met'})"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines += [f"note: {note}" for note in p.notes]
    return "\n".join(lines)


def load_coefficients(path: Path = DEFAULT_CALIBRATION) -> Coefficients:
    """Read coefficients from JSON; unknown keys are an error, missing keys take the estimates."""
    data = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(Coefficients)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown coefficient(s) {sorted(unknown)}")
    return Coefficients(**data)


def save_coefficients(coeffs: Coefficients, path: Path = DEFAULT_CALIBRATION) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(coeffs), indent=2) + "\n")


@dataclass(frozen=True)
class _Layout:
    """Per-vector bytes split into what is exact (integers) and what is expected or calibrated."""

    vector_bytes: int
    code_bytes: int
    label_bytes: int
    graph_exact: int
    graph_fractional: float
    overhead: float
    fixed_per_shard: int

    @property
    def exact_per_vector(self) -> int:
        return self.vector_bytes + self.code_bytes + self.label_bytes + self.graph_exact

    @property
    def fractional_per_vector(self) -> float:
        return self.graph_fractional + self.overhead

    @property
    def per_vector(self) -> float:
        return self.exact_per_vector + self.fractional_per_vector


# IVF lists are std::vectors grown by doubling; what of their spare capacity is resident falls as the lists
# grow (pages a large buffer never touched are not in RSS). Measured by `python -m loadtest.bench_ivf_list_slack`
# (faiss ArrayInvertedLists filled as a shard fills them, in batches of 2,000 points over 4,096 lists; RssAnon
# growth after malloc_trim over the exact bytes; loadtest/results/ivf-list-slack-2026-12-04.json): the resident
# slack fraction by a list's bytes (codes and ids). Applied relative to the calibrated fraction at the
# calibration's own list length, so the calibration stays the measure of record there.
IVF_LIST_SLACK_BY_LIST_BYTES = ((1_758, 0.704), (5_859, 0.608), (17_578, 0.386), (52_734, 0.248), (175_781, 0.241))


def _relative_list_slack(list_bytes: float) -> float:
    """The curve, linear in log(list bytes) between its points and flat beyond its ends."""
    points = IVF_LIST_SLACK_BY_LIST_BYTES
    if list_bytes <= points[0][0]:
        return points[0][1]
    for (b0, f0), (b1, f1) in zip(points, points[1:]):
        if list_bytes <= b1:
            t = math.log(list_bytes / b0) / math.log(b1 / b0)
            return f0 + t * (f1 - f0)
    return points[-1][1]


def ivf_list_slack_fraction(coeffs: Coefficients, list_bytes: float) -> float:
    """The resident slack of IVF lists of `list_bytes` each, as a fraction of their bytes: the calibrated
    fraction, scaled by the measured curve from the calibration's list length to this one."""
    ref_code = math.ceil(coeffs.ref_pq_m * coeffs.ref_pq_nbits / 8)
    ref_list_bytes = coeffs.ref_vectors / coeffs.ref_ivf_nlist * (ref_code + FAISS_ID_BYTES)
    return coeffs.ivfpq_list_slack_fraction * _relative_list_slack(list_bytes) / _relative_list_slack(ref_list_bytes)


def _layout(inp: SizingInput, coeffs: Coefficients, vectors_per_shard: int | None = None, *, compacted: bool = False) -> _Layout:
    """`compacted`: IVF lists at their exact size, as a served shard keeps them once writes go quiet."""
    d = inp.dim
    if inp.index_kind == "flat":
        return _Layout(vector_bytes=4 * d, code_bytes=0, label_bytes=0, graph_exact=0, graph_fractional=0.0,
                       overhead=0.0, fixed_per_shard=0)
    if inp.index_kind == "hnsw":
        m = inp.hnsw_m
        return _Layout(
            vector_bytes=4 * d,
            code_bytes=0,
            label_bytes=8,
            graph_exact=4 + 8 * m,
            graph_fractional=(4 + 4 * m) / (m - 1),
            overhead=coeffs.hnsw_overhead_bytes_per_vector,
            fixed_per_shard=HNSWLIB_LABEL_LOCK_BYTES,
        )
    code = math.ceil(inp.pq_m * inp.pq_nbits / 8)
    ksub = 1 << inp.pq_nbits
    table = inp.ivf_nlist * inp.pq_m * ksub * 4
    return _Layout(
        vector_bytes=4 * d if inp.refine else 0,
        code_bytes=code,
        label_bytes=FAISS_ID_BYTES,
        graph_exact=0,
        graph_fractional=0.0,
        overhead=0.0 if compacted else
        ivf_list_slack_fraction(coeffs, (vectors_per_shard or inp.vectors) / inp.ivf_nlist * (code + FAISS_ID_BYTES))
        * (code + FAISS_ID_BYTES),
        fixed_per_shard=inp.ivf_nlist * d * 4 + ksub * d * 4
        + (table if inp.metric == "l2" and table <= FAISS_PRECOMPUTED_TABLE_MAX_BYTES else 0),
    )


def _snapshot_estimate_bytes_per_point(inp: SizingInput, layout: _Layout, raw_vector_file: int) -> float:
    """A snapshot's bytes per point from the layouts: the index's bytes without the allocator's (hnsw's
    upper-level links are in it, IVF lists' slack and the calibrated overhead not), the id and metadata, and
    hnsw's raw-vector copy with its label (a served shard saves the arena beside the graph)."""
    arena = raw_vector_file + 8 if raw_vector_file else 0
    return layout.exact_per_vector + layout.graph_fractional + inp.id_bytes_per_point + inp.metadata_bytes_per_point + arena


def snapshot_estimate_bytes_per_point(inp: SizingInput, coeffs: Coefficients, *, served: bool) -> float:
    """The layouts' estimate of a snapshot's bytes per point (served: with hnsw's raw-vector copy)."""
    return _snapshot_estimate_bytes_per_point(inp, _layout(inp, coeffs), 4 * inp.dim if served and inp.index_kind == "hnsw" else 0)


def _served_intercept_scales(inp: SizingInput, coeffs: Coefficients) -> tuple[float, float]:
    """How the served per-shard intercepts scale to `inp` from the calibration's parameters: for ivf_pq, its
    training's working memory as its sample (39 * nlist points of d floats) and its k-means CPU as nlist^2 * d."""
    if inp.index_kind != "ivf_pq":
        return 1.0, 1.0
    nlist, dim = inp.ivf_nlist / coeffs.served_ref_ivf_nlist, inp.dim / coeffs.served_ref_dim
    return nlist * dim, nlist * nlist * dim


def _total(count: int, exact: int, fractional: float) -> int:
    """count * (exact + fractional) bytes, exact in the integer part, rounded up."""
    return count * exact + math.ceil(count * fractional)


def _ivf_cost(n: float, d: int, nlist: int, nprobe: int, pq_m: int, pq_nbits: int) -> float:
    return nlist * d + nprobe * (1 << pq_nbits) * d + n / nlist * nprobe * pq_m


def _qps_per_core(inp: SizingInput, c: Coefficients, n: int) -> float:
    if inp.index_kind == "flat":
        return c.flat_qps_per_core * (c.ref_vectors * c.ref_dim) / (n * inp.dim)
    if inp.index_kind == "hnsw":
        if c.hnsw_qps_size_exponent:
            return c.hnsw_qps_per_core * (c.ref_dim / inp.dim) * (c.ref_vectors / max(n, 2)) ** c.hnsw_qps_size_exponent
        return c.hnsw_qps_per_core * (c.ref_dim / inp.dim) * (math.log2(c.ref_vectors) / math.log2(max(n, 2)))
    reference = _ivf_cost(c.ref_vectors, c.ref_dim, c.ref_ivf_nlist, c.ref_ivf_nprobe, c.ref_pq_m, c.ref_pq_nbits)
    return c.ivfpq_qps_per_core * reference / _ivf_cost(n, inp.dim, inp.ivf_nlist, inp.ivf_nprobe,
                                                        inp.pq_m, inp.pq_nbits)


def _build_core_s_per_vector(inp: SizingInput, c: Coefficients, n: int) -> float:
    scale = inp.dim / c.ref_dim
    if inp.index_kind == "flat":
        return c.flat_build_core_s_per_vector * scale
    if inp.index_kind == "hnsw":
        if c.hnsw_build_size_exponent:
            return c.hnsw_build_core_s_per_vector * scale * (max(n, 2) / c.ref_vectors) ** c.hnsw_build_size_exponent
        return c.hnsw_build_core_s_per_vector * scale * math.log2(max(n, 2)) / math.log2(c.ref_vectors)
    # Adding a vector assigns it to a coarse centroid and encodes it against the codebooks.
    per_add = (inp.ivf_nlist + (1 << inp.pq_nbits)) * inp.dim
    reference = (c.ref_ivf_nlist + (1 << c.ref_pq_nbits)) * c.ref_dim
    return c.ivfpq_build_core_s_per_vector * per_add / reference


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            break
        value /= 1000
    shown = f"{n:,} B" if unit == "B" else f"{value:,.2f} {unit} ({n:,} B)"
    return shown


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"
