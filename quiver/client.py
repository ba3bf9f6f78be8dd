"""Python client for the Quiver router, sync (`Client`) and asyncio (`AsyncClient`).

Both speak the same protos through the same request builders and result parsers; they differ only in how
they call. Every answer is a dataclass (CollectionInfo, SearchResult, Point, ClusterStatus, ...). Ids may be
str or int (ints are sent as their decimal text). Every call takes `timeout=` (seconds; the client's default
otherwise). Idempotent calls (reads, upserts, deletes) that fail UNAVAILABLE are retried by gRPC itself,
with backoff, under the call's deadline (the retry service config below); creates and drops are not.
Failures surface as `quiver.errors` exceptions (InvalidArgument, NotFound, Unavailable, ...; the tree is in
that module's docstring), chosen by status code, each with `.code`. Large upserts are split into batches.

    with Client("127.0.0.1:7000") as client:
        client.create_collection("docs", dim=384, shards=3, model="all-MiniLM-L6-v2")
        client.upsert("docs", ids, vectors, metadata=[{"lang": "en"}, ...])
        hits = client.search("docs", query_vector, k=10, filter=Eq("lang", "en"))
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import grpc
import numpy as np

from quiver.errors import ERRORS_BY_CODE, QuiverError, ResourceExhausted, retry_pushback_s
from quiver.filters import Filter, Metadata
from quiver.v1 import router_pb2, router_pb2_grpc, types_pb2
from quiver.wire.filters import filter_to_proto, metadata_from_proto, metadata_to_proto
from quiver.wire.packed_hits import HitBatch
from quiver.wire.specs import index_to_proto, metric_to_proto

DEFAULT_BATCH = 1000
RETRIED_METHODS = ("Get", "Search", "Upsert", "Delete", "DescribeCollection", "ListCollections", "ClusterStatus")
# gRPC's own retries (A6): UNAVAILABLE means the router or a shard could not be reached, and these calls
# are safe to repeat. Attempts share the call's deadline; the server's retry pushback is honoured.
RETRY_SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": "quiver.v1.Router", "method": m} for m in RETRIED_METHODS],
        "retryPolicy": {
            "maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
]
Id = str | int


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    strategy: str
    partial: bool
    shards_asked: int
    shards_answered: int
    version: int = 0  # the index version of the collection that answered
    # A filtered search: the strategy's estimated cost (us, summed over the shards) and the points the
    # filter allowed.
    estimated_cost_us: float = 0.0
    filter_matches: int = 0

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class Point:
    id: str
    metadata: Metadata
    vector: np.ndarray | None


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dim: int
    metric: str  # "cosine", "ip" or "l2"
    index: str  # "hnsw", "ivf_pq" or "flat"
    index_params: dict[str, Any]
    shards: int
    replication_factor: int
    model: str
    min_in_sync: int = 1
    partition_key_field: str = ""  # "" = not keyed


@dataclass(frozen=True)
class CollectionInfo:
    spec: CollectionSpec
    active_version: int
    created_unix: int


@dataclass(frozen=True)
class ServerStatus:
    server_id: str
    address: str
    draining: bool = False


@dataclass(frozen=True)
class ReplicaStatus:
    collection: str
    version: int
    shard: int
    server_id: str
    address: str  # "" while the server is down
    state: str  # "serving" or "unreachable"
    point_count: int
    trained: bool  # False while an IVF-PQ partition buffers points for training (searches are exact)
    write_state: str  # "ok", "disk_full", "read_only"; "" when unreachable
    write_fault: str
    role: str = ""  # "primary", "in_sync" (reads may use it) or "catching_up" (no reads)
    term: int = 0  # the shard's primary term
    last_lsn: int = 0
    lag: int = 0  # LSNs behind the primary


@dataclass(frozen=True)
class ClusterStatus:
    servers: list[ServerStatus]
    collections: list[CollectionInfo]
    replicas: list[ReplicaStatus]
    skipped_records: dict[str, str] = field(default_factory=dict)  # etcd key -> why this router could not read it
    reindexes: list[router_pb2.ReindexProgress] = field(default_factory=list)  # every live build, whichever router runs it
    model_coverage: list[router_pb2.ModelCoverage] = field(default_factory=list)  # versions opened for a new model


_METRIC_NAMES = {v: k.removeprefix("METRIC_").lower() for k, v in types_pb2.Metric.items()}


def collection_info(info: router_pb2.CollectionInfo) -> CollectionInfo:
    spec = info.spec
    kind = spec.index.WhichOneof("kind") or "hnsw"
    params = {f.name: v for f, v in getattr(spec.index, kind).ListFields()} if spec.index.HasField(kind) else {}
    return CollectionInfo(
        CollectionSpec(spec.name, spec.dim, _METRIC_NAMES.get(spec.metric, "cosine"), kind, params, spec.shards,
                       spec.replication_factor, spec.model, spec.min_in_sync or 1, spec.partition_key_field),
        info.active_version, info.created_unix,
    )


def cluster_status(reply: router_pb2.ClusterStatusResponse) -> ClusterStatus:
    return ClusterStatus(
        [ServerStatus(s.server_id, s.address, s.draining) for s in reply.servers],
        [collection_info(c) for c in reply.collections],
        [ReplicaStatus(r.collection, r.version, r.shard, r.server_id, r.address, r.state, r.point_count, r.trained,
                       r.write_state, r.write_fault, r.role, r.term, r.last_lsn, r.lag) for r in reply.replicas],
        {r.key: r.reason for r in reply.skipped_records},
        list(reply.reindexes),
        list(reply.model_coverage),
    )


def point_ids(ids: Sequence[Id]) -> list[str]:
    """Ids as the wire carries them: str as given, int as decimal text (bool is not an id)."""
    out = []
    for position, point_id in enumerate(ids):
        if isinstance(point_id, bool) or not isinstance(point_id, (str, int)):
            raise TypeError(f"point ids are str or int; ids[{position}] is {type(point_id).__name__} {point_id!r}")
        out.append(point_id if isinstance(point_id, str) else str(point_id))
    return out


def _error(error: grpc.RpcError) -> QuiverError:
    code = error.code() if hasattr(error, "code") else None
    failure = ERRORS_BY_CODE.get(code, QuiverError)(error.details() if hasattr(error, "details") else str(error))  # type: ignore[arg-type]
    if type(failure) is QuiverError:
        failure.received_code = code  # type: ignore[attr-defined]
    if isinstance(failure, ResourceExhausted):
        pushback = retry_pushback_s(error.trailing_metadata() if hasattr(error, "trailing_metadata") else None)
        failure.retry_after_s = pushback if pushback is not None and pushback >= 0 else None  # the server's "retry after"
    return failure


# -- request builders (shared by both clients) ------------------------------------------------------


def reindex_request(
    collection: str, index: str | None, index_params: dict[str, Any] | None, shards: int, replication_factor: int, model: str = "",
) -> router_pb2.ReindexRequest:
    if index is None and index_params:
        raise ValueError("index_params need the index kind they are for (index=...)")
    request = router_pb2.ReindexRequest(collection=collection, shards=shards, replication_factor=replication_factor, model=model)
    if index is not None:
        request.index.CopyFrom(index_to_proto(index, index_params or {}))
    return request


def alias_request(alias: str, collection: str, expected: str | None) -> router_pb2.SetAliasRequest:
    return router_pb2.SetAliasRequest(
        alias=alias, collection=collection, expected_collection=expected or "", expect_absent=expected == "",
    )


def collection_spec(
    name: str, dim: int, metric: str = "cosine", index: str = "hnsw", index_params: dict[str, Any] | None = None,
    shards: int = 1, replication_factor: int = 1, model: str = "", min_in_sync: int = 1, partition_key_field: str = "",
) -> router_pb2.CollectionSpec:
    return router_pb2.CollectionSpec(
        name=name, dim=dim, metric=metric_to_proto(metric), index=index_to_proto(index, index_params or {}),
        shards=shards, replication_factor=replication_factor, model=model, min_in_sync=min_in_sync,
        partition_key_field=partition_key_field,
    )


def _as_matrix(vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    return matrix[None, :] if matrix.ndim == 1 else matrix


def upsert_requests(
    collection: str, ids: Sequence[Id], vectors: np.ndarray, metadata: Sequence[Metadata] | None,
    partition_key: str, model: str, batch_size: int, version: int = 0,
) -> Iterator[router_pb2.RouterUpsertRequest]:
    matrix = _as_matrix(vectors)
    if len(matrix) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(matrix)} vectors")
    if metadata is not None and len(metadata) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(metadata)} metadata entries")
    for start in range(0, len(ids), batch_size):
        end = start + batch_size
        yield router_pb2.RouterUpsertRequest(
            collection=collection, ids=point_ids(ids[start:end]), vectors=matrix[start:end].tobytes(),
            metadata=[metadata_to_proto(m) for m in metadata[start:end]] if metadata is not None else [],
            partition_key=partition_key, model=model, version=version,
        )


def search_request(
    collection: str, queries: np.ndarray, k: int, filter: Filter | None, ef_search: int, nprobe: int, exact: bool,
    include_metadata: bool, include_vectors: bool, partition_key: str, allow_partial: bool, model: str, version: int = 0,
) -> router_pb2.RouterSearchRequest:
    matrix = _as_matrix(queries)
    request = router_pb2.RouterSearchRequest(
        collection=collection, queries=matrix.tobytes(), k=k,
        params=types_pb2.SearchParams(ef_search=ef_search, nprobe=nprobe, exact=exact),
        include_metadata=include_metadata, include_vectors=include_vectors,
        partition_key=partition_key, allow_partial=allow_partial, model=model, version=version,
        # A batch's ids and scores alone come back packed: no message per query or string per hit for the
        # router to build (a router too old to pack answers in `results`, which search_results reads as
        # ever). One query's few hits cost less as a message at both ends.
        packed_hits=len(matrix) > 1 and not (include_metadata or include_vectors),
    )
    if filter is not None:
        request.filter.CopyFrom(filter_to_proto(filter))
    return request


_STRATEGY_NAMES = {v: k.lower() for k, v in types_pb2.SearchStrategy.items()}


def search_results(response: router_pb2.RouterSearchResponse) -> list[SearchResult]:
    coverage = response.coverage
    if response.HasField("hits"):
        packed = HitBatch.from_proto(response.hits)
        return [
            SearchResult(
                [Hit(i, s, None, None) for i, s in zip(ids, scores)], _STRATEGY_NAMES.get(strategy, "?"), coverage.partial,
                coverage.shards_asked, coverage.shards_answered, response.version, cost, matches,
            )
            for ids, scores, strategy, cost, matches in packed.per_query()
        ]
    out = []
    for result in response.results:
        metadata = [metadata_from_proto(m) for m in result.metadata] if len(result.metadata) else None
        vectors = np.frombuffer(result.vectors, dtype="<f4").reshape(len(result.ids), -1) if result.vectors else None
        hits = [
            Hit(i, s, metadata[n] if metadata else None, vectors[n] if vectors is not None else None)
            for n, (i, s) in enumerate(zip(result.ids, result.scores))
        ]
        out.append(SearchResult(
            hits, _STRATEGY_NAMES.get(result.strategy, "?"), coverage.partial, coverage.shards_asked, coverage.shards_answered, response.version,
            result.estimated_cost_us, result.filter_matches,
        ))
    return out


def get_points(response: router_pb2.RouterGetResponse) -> list[Point]:
    return [
        Point(p.id, metadata_from_proto(p.metadata), np.frombuffer(p.vector, dtype="<f4") if p.vector else None)
        for p in response.points
    ]


def delete_request(collection: str, ids: Sequence[Id] | None, filter: Filter | None, partition_key: str, version: int = 0) -> router_pb2.RouterDeleteRequest:
    request = router_pb2.RouterDeleteRequest(collection=collection, ids=point_ids(ids or []), partition_key=partition_key, version=version)
    if filter is not None:
        request.filter.CopyFrom(filter_to_proto(filter))
    return request


# -- the clients ------------------------------------------------------------------------------------


class Client:
    """Blocking client. One channel per client; thread-safe."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(address, options=_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self.timeout = timeout  # seconds, for calls that give no timeout= of their own

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise _error(error) from None

    def create_collection(self, name: str, dim: int, *, timeout: float | None = None, **options: Any) -> CollectionInfo:
        """options: metric, index, index_params, shards, replication_factor, model, min_in_sync, partition_key_field (see collection_spec)."""
        request = router_pb2.CreateCollectionRequest(spec=collection_spec(name, dim, **options))
        return collection_info((self._call(self._stub.CreateCollection, request, timeout)).collection)

    def describe_collection(self, name: str, *, timeout: float | None = None) -> CollectionInfo:
        reply = self._call(self._stub.DescribeCollection, router_pb2.DescribeCollectionRequest(name=name), timeout)
        return collection_info(reply.collection)

    def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        reply = self._call(self._stub.ListCollections, router_pb2.ListCollectionsRequest(), timeout)
        return [collection_info(c) for c in reply.collections]

    def drop_collection(self, name: str, *, timeout: float | None = None) -> None:
        self._call(self._stub.DropCollection, router_pb2.DropCollectionRequest(name=name), timeout)

    def upsert(
        self, collection: str, ids: Sequence[Id], vectors: np.ndarray, metadata: Sequence[Metadata] | None = None,
        *, partition_key: str = "", model: str = "", batch_size: int = DEFAULT_BATCH, timeout: float | None = None, version: int = 0,
    ) -> int:
        """Inserts or replaces points; `timeout` applies to each batch of `batch_size`. `version`: an index
        version other than the active one (one opened for a new embedding model); 0: the active one."""
        total = 0
        for request in upsert_requests(collection, ids, vectors, metadata, partition_key, model, batch_size, version):
            total += (self._call(self._stub.Upsert, request, timeout)).upserted
        return total

    def delete(
        self, collection: str, ids: Sequence[Id] | None = None, *, filter: Filter | None = None, partition_key: str = "",
        timeout: float | None = None, version: int = 0,
    ) -> int:
        reply = self._call(self._stub.Delete, delete_request(collection, ids, filter, partition_key, version), timeout)
        return int(reply.deleted)

    def get(
        self, collection: str, ids: Sequence[Id], *, include_vectors: bool = False, partition_key: str = "",
        timeout: float | None = None, version: int = 0,
    ) -> list[Point]:
        request = router_pb2.RouterGetRequest(
            collection=collection, ids=point_ids(ids), include_vectors=include_vectors, partition_key=partition_key, version=version,
        )
        return get_points(self._call(self._stub.Get, request, timeout))

    def search(
        self, collection: str, queries: np.ndarray, k: int = 10, *, filter: Filter | None = None, ef_search: int = 0,
        nprobe: int = 0, exact: bool = False, include_metadata: bool = False, include_vectors: bool = False,
        partition_key: str = "", allow_partial: bool = False, model: str = "", timeout: float | None = None, version: int = 0,
    ) -> list[SearchResult]:
        """One result per query row (a single vector is one query). `version`: an index version other than
        the active one (verifying a new one, or querying a previous model's); 0: the active one."""
        request = search_request(
            collection, queries, k, filter, ef_search, nprobe, exact, include_metadata, include_vectors, partition_key, allow_partial, model, version,
        )
        return search_results(self._call(self._stub.Search, request, timeout))

    def status(self, *, timeout: float | None = None) -> ClusterStatus:
        return cluster_status(self._call(self._stub.ClusterStatus, router_pb2.ClusterStatusRequest(), timeout))

    def drain(self, server_id: str, *, cancel: bool = False, timeout: float | None = None) -> int:
        """Ask the controller to move every replica off a server (before maintenance); the replicas it held."""
        request = router_pb2.DrainServerRequest(server_id=server_id, cancel=cancel)
        return int(self._call(self._stub.DrainServer, request, timeout).replicas_left)

    def versions(self, collection: str, *, timeout: float | None = None) -> router_pb2.ListVersionsResponse:
        """The collection's index versions: state, spec, model, point counts; and which are active and previous."""
        return self._call(self._stub.ListVersions, router_pb2.ListVersionsRequest(collection=collection), timeout)

    def cutover(self, collection: str, *, expected_active: int = 0, target: int = 0, force: bool = False, timeout: float | None = None) -> tuple[int, int]:
        """Switch the collection to a ready version (default: the newest) in one transaction; (active, previous)."""
        request = router_pb2.CutoverRequest(collection=collection, expected_active=expected_active, target=target, force=force)
        reply = self._call(self._stub.Cutover, request, timeout)
        return int(reply.active), int(reply.previous)

    def rollback(self, collection: str, *, expected_active: int = 0, force: bool = False, timeout: float | None = None) -> tuple[int, int]:
        """Switch back to the previous version in one transaction; (active, previous). `force`: even when no
        follow kept it up to date since the cutover (writes made since are then missing from it)."""
        request = router_pb2.RollbackRequest(collection=collection, expected_active=expected_active, force=force)
        reply = self._call(self._stub.Rollback, request, timeout)
        return int(reply.active), int(reply.previous)

    def retire(self, collection: str, version: int, *, timeout: float | None = None) -> None:
        """Retire a version that is not active: it takes no more writes and its partitions are freed."""
        self._call(self._stub.RetireVersion, router_pb2.RetireVersionRequest(collection=collection, version=version), timeout)

    def record_verification(self, collection: str, figures: router_pb2.VerificationFigures, *, timeout: float | None = None) -> None:
        """Keep a version's verification figures (quiver.verification.as_figures) for `versions` to list."""
        self._call(self._stub.RecordVerification, router_pb2.RecordVerificationRequest(collection=collection, figures=figures), timeout)

    def set_alias(self, alias: str, collection: str, *, expected: str | None = None, timeout: float | None = None) -> int:
        """Point `alias` at `collection` (one etcd transaction; `expected`: the collection it must point at now,
        "" = it must not exist yet). Returns the etcd revision of the switch."""
        return int(self._call(self._stub.SetAlias, alias_request(alias, collection, expected), timeout).revision)

    def delete_alias(self, alias: str, *, expected: str = "", timeout: float | None = None) -> None:
        self._call(self._stub.DeleteAlias, router_pb2.DeleteAliasRequest(alias=alias, expected_collection=expected), timeout)

    def aliases(self, *, timeout: float | None = None) -> dict[str, str]:
        """alias -> the collection it points at."""
        return {a.alias: a.collection for a in self._call(self._stub.ListAliases, router_pb2.ListAliasesRequest(), timeout).aliases}

    def reindex(
        self, collection: str, *, index: str | None = None, index_params: dict[str, Any] | None = None, shards: int = 0,
        replication_factor: int = 0, model: str = "", timeout: float | None = None,
    ) -> router_pb2.ReindexProgress:
        """Start building the next version (new index, parameters, shard count or replication factor) from
        the active one, in the router asked; its progress. Asked again while it runs: the same build."""
        return self._call(self._stub.Reindex, reindex_request(collection, index, index_params, shards, replication_factor, model), timeout)

    def reindex_status(self, collection: str = "", *, timeout: float | None = None) -> list[router_pb2.ReindexProgress]:
        return list(self._call(self._stub.ReindexStatus, router_pb2.ReindexStatusRequest(collection=collection), timeout).builds)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client over grpc.aio; create it inside a running event loop."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self.timeout = timeout  # seconds, for calls that give no timeout= of their own

    async def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None

    async def create_collection(self, name: str, dim: int, *, timeout: float | None = None, **options: Any) -> CollectionInfo:
        """options: metric, index, index_params, shards, replication_factor, model, min_in_sync, partition_key_field (see collection_spec)."""
        request = router_pb2.CreateCollectionRequest(spec=collection_spec(name, dim, **options))
        return collection_info((await self._call(self._stub.CreateCollection, request, timeout)).collection)

    async def describe_collection(self, name: str, *, timeout: float | None = None) -> CollectionInfo:
        reply = await self._call(self._stub.DescribeCollection, router_pb2.DescribeCollectionRequest(name=name), timeout)
        return collection_info(reply.collection)

    async def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        reply = await self._call(self._stub.ListCollections, router_pb2.ListCollectionsRequest(), timeout)
        return [collection_info(c) for c in reply.collections]

    async def drop_collection(self, name: str, *, timeout: float | None = None) -> None:
        await self._call(self._stub.DropCollection, router_pb2.DropCollectionRequest(name=name), timeout)

    async def upsert(
        self, collection: str, ids: Sequence[Id], vectors: np.ndarray, metadata: Sequence[Metadata] | None = None,
        *, partition_key: str = "", model: str = "", batch_size: int = DEFAULT_BATCH, timeout: float | None = None, version: int = 0,
    ) -> int:
        """Inserts or replaces points; `timeout` applies to each batch of `batch_size`. `version`: an index
        version other than the active one (one opened for a new embedding model); 0: the active one."""
        total = 0
        for request in upsert_requests(collection, ids, vectors, metadata, partition_key, model, batch_size, version):
            total += (await self._call(self._stub.Upsert, request, timeout)).upserted
        return total

    async def delete(
        self, collection: str, ids: Sequence[Id] | None = None, *, filter: Filter | None = None, partition_key: str = "",
        timeout: float | None = None, version: int = 0,
    ) -> int:
        reply = await self._call(self._stub.Delete, delete_request(collection, ids, filter, partition_key, version), timeout)
        return int(reply.deleted)

    async def get(
        self, collection: str, ids: Sequence[Id], *, include_vectors: bool = False, partition_key: str = "",
        timeout: float | None = None, version: int = 0,
    ) -> list[Point]:
        request = router_pb2.RouterGetRequest(
            collection=collection, ids=point_ids(ids), include_vectors=include_vectors, partition_key=partition_key, version=version,
        )
        return get_points(await self._call(self._stub.Get, request, timeout))

    async def search(
        self, collection: str, queries: np.ndarray, k: int = 10, *, filter: Filter | None = None, ef_search: int = 0,
        nprobe: int = 0, exact: bool = False, include_metadata: bool = False, include_vectors: bool = False,
        partition_key: str = "", allow_partial: bool = False, model: str = "", timeout: float | None = None, version: int = 0,
    ) -> list[SearchResult]:
        """One result per query row (a single vector is one query). `version`: an index version other than
        the active one (verifying a new one, or querying a previous model's); 0: the active one."""
        request = search_request(
            collection, queries, k, filter, ef_search, nprobe, exact, include_metadata, include_vectors, partition_key, allow_partial, model, version,
        )
        return search_results(await self._call(self._stub.Search, request, timeout))

    async def status(self, *, timeout: float | None = None) -> ClusterStatus:
        return cluster_status(await self._call(self._stub.ClusterStatus, router_pb2.ClusterStatusRequest(), timeout))

    async def drain(self, server_id: str, *, cancel: bool = False, timeout: float | None = None) -> int:
        """Ask the controller to move every replica off a server (before maintenance); the replicas it held."""
        request = router_pb2.DrainServerRequest(server_id=server_id, cancel=cancel)
        return int((await self._call(self._stub.DrainServer, request, timeout)).replicas_left)

    async def versions(self, collection: str, *, timeout: float | None = None) -> router_pb2.ListVersionsResponse:
        """The collection's index versions: state, spec, model, point counts; and which are active and previous."""
        return await self._call(self._stub.ListVersions, router_pb2.ListVersionsRequest(collection=collection), timeout)

    async def cutover(
        self, collection: str, *, expected_active: int = 0, target: int = 0, force: bool = False, timeout: float | None = None,
    ) -> tuple[int, int]:
        """Switch the collection to a ready version (default: the newest) in one transaction; (active, previous)."""
        request = router_pb2.CutoverRequest(collection=collection, expected_active=expected_active, target=target, force=force)
        reply = await self._call(self._stub.Cutover, request, timeout)
        return int(reply.active), int(reply.previous)

    async def rollback(self, collection: str, *, expected_active: int = 0, force: bool = False, timeout: float | None = None) -> tuple[int, int]:
        """As Client.rollback."""
        request = router_pb2.RollbackRequest(collection=collection, expected_active=expected_active, force=force)
        reply = await self._call(self._stub.Rollback, request, timeout)
        return int(reply.active), int(reply.previous)

    async def retire(self, collection: str, version: int, *, timeout: float | None = None) -> None:
        """Retire a version that is not active: it takes no more writes and its partitions are freed."""
        await self._call(self._stub.RetireVersion, router_pb2.RetireVersionRequest(collection=collection, version=version), timeout)

    async def set_alias(self, alias: str, collection: str, *, expected: str | None = None, timeout: float | None = None) -> int:
        return int((await self._call(self._stub.SetAlias, alias_request(alias, collection, expected), timeout)).revision)

    async def delete_alias(self, alias: str, *, expected: str = "", timeout: float | None = None) -> None:
        await self._call(self._stub.DeleteAlias, router_pb2.DeleteAliasRequest(alias=alias, expected_collection=expected), timeout)

    async def aliases(self, *, timeout: float | None = None) -> dict[str, str]:
        reply = await self._call(self._stub.ListAliases, router_pb2.ListAliasesRequest(), timeout)
        return {a.alias: a.collection for a in reply.aliases}

    async def reindex(
        self, collection: str, *, index: str | None = None, index_params: dict[str, Any] | None = None, shards: int = 0,
        replication_factor: int = 0, model: str = "", timeout: float | None = None,
    ) -> router_pb2.ReindexProgress:
        """As Client.reindex."""
        return await self._call(self._stub.Reindex, reindex_request(collection, index, index_params, shards, replication_factor, model), timeout)

    async def reindex_status(self, collection: str = "", *, timeout: float | None = None) -> list[router_pb2.ReindexProgress]:
        reply = await self._call(self._stub.ReindexStatus, router_pb2.ReindexStatusRequest(collection=collection), timeout)
        return list(reply.builds)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
