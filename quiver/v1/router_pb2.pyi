from quiver.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CollectionSpec(_message.Message):
    __slots__ = ("name", "dim", "metric", "index", "shards", "replication_factor", "model", "min_in_sync", "partition_key_field")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MIN_IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: _types_pb2.Metric
    index: _types_pb2.IndexSpec
    shards: int
    replication_factor: int
    model: str
    min_in_sync: int
    partition_key_field: str
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[_types_pb2.Metric, str]] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., shards: _Optional[int] = ..., replication_factor: _Optional[int] = ..., model: _Optional[str] = ..., min_in_sync: _Optional[int] = ..., partition_key_field: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("spec", "active_version", "created_unix")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    spec: CollectionSpec
    active_version: int
    created_unix: int
    def __init__(self, spec: _Optional[_Union[CollectionSpec, _Mapping]] = ..., active_version: _Optional[int] = ..., created_unix: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: CollectionSpec
    def __init__(self, spec: _Optional[_Union[CollectionSpec, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouterUpsertRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "metadata", "partition_key", "model", "version")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[_types_pb2.Metadata]
    partition_key: str
    model: str
    version: int
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., metadata: _Optional[_Iterable[_Union[_types_pb2.Metadata, _Mapping]]] = ..., partition_key: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RouterUpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class RouterDeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "partition_key", "version")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: _types_pb2.Filter
    partition_key: str
    version: int
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., partition_key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RouterDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class RouterGetRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vectors", "partition_key", "version")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    partition_key: str
    version: int
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ..., partition_key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RouterGetResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_types_pb2.Point]
    def __init__(self, points: _Optional[_Iterable[_Union[_types_pb2.Point, _Mapping]]] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("shards_asked", "shards_answered", "partial")
    SHARDS_ASKED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    shards_asked: int
    shards_answered: int
    partial: bool
    def __init__(self, shards_asked: _Optional[int] = ..., shards_answered: _Optional[int] = ..., partial: _Optional[bool] = ...) -> None: ...

class RouterSearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "filter", "params", "include_metadata", "include_vectors", "partition_key", "allow_partial", "model", "version", "packed_hits")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKED_HITS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: bytes
    k: int
    filter: _types_pb2.Filter
    params: _types_pb2.SearchParams
    include_metadata: bool
    include_vectors: bool
    partition_key: str
    allow_partial: bool
    model: str
    version: int
    packed_hits: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[bytes] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.SearchParams, _Mapping]] = ..., include_metadata: _Optional[bool] = ..., include_vectors: _Optional[bool] = ..., partition_key: _Optional[str] = ..., allow_partial: _Optional[bool] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., packed_hits: _Optional[bool] = ...) -> None: ...

class RouterSearchResponse(_message.Message):
    __slots__ = ("results", "coverage", "version", "hits")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.QueryResult]
    coverage: Coverage
    version: int
    hits: _types_pb2.PackedHits
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.QueryResult, _Mapping]]] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ..., version: _Optional[int] = ..., hits: _Optional[_Union[_types_pb2.PackedHits, _Mapping]] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "state", "index", "model", "shards", "replication_factor", "failure", "built_from", "created_unix", "point_count", "verification")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    BUILT_FROM_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    index: _types_pb2.IndexSpec
    model: str
    shards: int
    replication_factor: int
    failure: str
    built_from: int
    created_unix: float
    point_count: int
    verification: VerificationFigures
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., model: _Optional[str] = ..., shards: _Optional[int] = ..., replication_factor: _Optional[int] = ..., failure: _Optional[str] = ..., built_from: _Optional[int] = ..., created_unix: _Optional[float] = ..., point_count: _Optional[int] = ..., verification: _Optional[_Union[VerificationFigures, _Mapping]] = ...) -> None: ...

class VerificationFigures(_message.Message):
    __slots__ = ("version", "active", "k", "queries", "recall", "overlap", "has_overlap", "p50_ms", "p99_ms", "active_p50_ms", "active_p99_ms", "verified_unix")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    HAS_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_P50_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_UNIX_FIELD_NUMBER: _ClassVar[int]
    version: int
    active: int
    k: int
    queries: int
    recall: float
    overlap: float
    has_overlap: bool
    p50_ms: float
    p99_ms: float
    active_p50_ms: float
    active_p99_ms: float
    verified_unix: float
    def __init__(self, version: _Optional[int] = ..., active: _Optional[int] = ..., k: _Optional[int] = ..., queries: _Optional[int] = ..., recall: _Optional[float] = ..., overlap: _Optional[float] = ..., has_overlap: _Optional[bool] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., active_p50_ms: _Optional[float] = ..., active_p99_ms: _Optional[float] = ..., verified_unix: _Optional[float] = ...) -> None: ...

class RecordVerificationRequest(_message.Message):
    __slots__ = ("collection", "figures")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    figures: VerificationFigures
    def __init__(self, collection: _Optional[str] = ..., figures: _Optional[_Union[VerificationFigures, _Mapping]] = ...) -> None: ...

class RecordVerificationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions", "active", "previous")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    active: int
    previous: int
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., active: _Optional[int] = ..., previous: _Optional[int] = ...) -> None: ...

class CutoverRequest(_message.Message):
    __slots__ = ("collection", "expected_active", "target", "force")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    expected_active: int
    target: int
    force: bool
    def __init__(self, collection: _Optional[str] = ..., expected_active: _Optional[int] = ..., target: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("collection", "expected_active", "force")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    expected_active: int
    force: bool
    def __init__(self, collection: _Optional[str] = ..., expected_active: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class CutoverResponse(_message.Message):
    __slots__ = ("active", "previous")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    active: int
    previous: int
    def __init__(self, active: _Optional[int] = ..., previous: _Optional[int] = ...) -> None: ...

class RetireVersionRequest(_message.Message):
    __slots__ = ("collection", "version")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    version: int
    def __init__(self, collection: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RetireVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("collection", "index", "shards", "replication_factor", "model")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    index: _types_pb2.IndexSpec
    shards: int
    replication_factor: int
    model: str
    def __init__(self, collection: _Optional[str] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., shards: _Optional[int] = ..., replication_factor: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ReindexShardProgress(_message.Message):
    __slots__ = ("source_shard", "exported", "total", "export_done", "replayed_lsn", "source_lsn", "built_s")
    SOURCE_SHARD_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    EXPORT_DONE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_LSN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_LSN_FIELD_NUMBER: _ClassVar[int]
    BUILT_S_FIELD_NUMBER: _ClassVar[int]
    source_shard: int
    exported: int
    total: int
    export_done: bool
    replayed_lsn: int
    source_lsn: int
    built_s: float
    def __init__(self, source_shard: _Optional[int] = ..., exported: _Optional[int] = ..., total: _Optional[int] = ..., export_done: _Optional[bool] = ..., replayed_lsn: _Optional[int] = ..., source_lsn: _Optional[int] = ..., built_s: _Optional[float] = ...) -> None: ...

class ReindexProgress(_message.Message):
    __slots__ = ("collection", "source_version", "version", "state", "failure", "shards", "elapsed_s", "points_per_s", "eta_s", "written", "reported_by", "reported_unix", "publisher")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    REPORTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    source_version: int
    version: int
    state: str
    failure: str
    shards: _containers.RepeatedCompositeFieldContainer[ReindexShardProgress]
    elapsed_s: float
    points_per_s: float
    eta_s: float
    written: int
    reported_by: str
    reported_unix: float
    publisher: str
    def __init__(self, collection: _Optional[str] = ..., source_version: _Optional[int] = ..., version: _Optional[int] = ..., state: _Optional[str] = ..., failure: _Optional[str] = ..., shards: _Optional[_Iterable[_Union[ReindexShardProgress, _Mapping]]] = ..., elapsed_s: _Optional[float] = ..., points_per_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., written: _Optional[int] = ..., reported_by: _Optional[str] = ..., reported_unix: _Optional[float] = ..., publisher: _Optional[str] = ...) -> None: ...

class ReindexStatusRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ReindexStatusResponse(_message.Message):
    __slots__ = ("builds",)
    BUILDS_FIELD_NUMBER: _ClassVar[int]
    builds: _containers.RepeatedCompositeFieldContainer[ReindexProgress]
    def __init__(self, builds: _Optional[_Iterable[_Union[ReindexProgress, _Mapping]]] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardReplicaStatus(_message.Message):
    __slots__ = ("collection", "version", "shard", "address", "state", "point_count", "trained", "server_id", "write_state", "write_fault", "role", "term", "last_lsn", "lag")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    WRITE_STATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_FAULT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    collection: str
    version: int
    shard: int
    address: str
    state: str
    point_count: int
    trained: bool
    server_id: str
    write_state: str
    write_fault: str
    role: str
    term: int
    last_lsn: int
    lag: int
    def __init__(self, collection: _Optional[str] = ..., version: _Optional[int] = ..., shard: _Optional[int] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., point_count: _Optional[int] = ..., trained: _Optional[bool] = ..., server_id: _Optional[str] = ..., write_state: _Optional[str] = ..., write_fault: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., last_lsn: _Optional[int] = ..., lag: _Optional[int] = ...) -> None: ...

class ShardServerStatus(_message.Message):
    __slots__ = ("server_id", "address", "draining")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    address: str
    draining: bool
    def __init__(self, server_id: _Optional[str] = ..., address: _Optional[str] = ..., draining: _Optional[bool] = ...) -> None: ...

class DrainServerRequest(_message.Message):
    __slots__ = ("server_id", "cancel")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    cancel: bool
    def __init__(self, server_id: _Optional[str] = ..., cancel: _Optional[bool] = ...) -> None: ...

class DrainServerResponse(_message.Message):
    __slots__ = ("replicas_left",)
    REPLICAS_LEFT_FIELD_NUMBER: _ClassVar[int]
    replicas_left: int
    def __init__(self, replicas_left: _Optional[int] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("servers", "collections", "replicas", "skipped_records", "reindexes", "model_coverage")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REINDEXES_FIELD_NUMBER: _ClassVar[int]
    MODEL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[ShardServerStatus]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    replicas: _containers.RepeatedCompositeFieldContainer[ShardReplicaStatus]
    skipped_records: _containers.RepeatedCompositeFieldContainer[SkippedRecord]
    reindexes: _containers.RepeatedCompositeFieldContainer[ReindexProgress]
    model_coverage: _containers.RepeatedCompositeFieldContainer[ModelCoverage]
    def __init__(self, servers: _Optional[_Iterable[_Union[ShardServerStatus, _Mapping]]] = ..., collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ShardReplicaStatus, _Mapping]]] = ..., skipped_records: _Optional[_Iterable[_Union[SkippedRecord, _Mapping]]] = ..., reindexes: _Optional[_Iterable[_Union[ReindexProgress, _Mapping]]] = ..., model_coverage: _Optional[_Iterable[_Union[ModelCoverage, _Mapping]]] = ...) -> None: ...

class ModelCoverage(_message.Message):
    __slots__ = ("collection", "version", "model", "active_version", "held", "active_points", "counted_unix", "error")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_POINTS_FIELD_NUMBER: _ClassVar[int]
    COUNTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    version: int
    model: str
    active_version: int
    held: int
    active_points: int
    counted_unix: float
    error: str
    def __init__(self, collection: _Optional[str] = ..., version: _Optional[int] = ..., model: _Optional[str] = ..., active_version: _Optional[int] = ..., held: _Optional[int] = ..., active_points: _Optional[int] = ..., counted_unix: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class SkippedRecord(_message.Message):
    __slots__ = ("key", "reason")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key: str
    reason: str
    def __init__(self, key: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("alias", "collection", "expected_collection", "expect_absent")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXPECT_ABSENT_FIELD_NUMBER: _ClassVar[int]
    alias: str
    collection: str
    expected_collection: str
    expect_absent: bool
    def __init__(self, alias: _Optional[str] = ..., collection: _Optional[str] = ..., expected_collection: _Optional[str] = ..., expect_absent: _Optional[bool] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("alias", "expected_collection")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    expected_collection: str
    def __init__(self, alias: _Optional[str] = ..., expected_collection: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAliasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Alias(_message.Message):
    __slots__ = ("alias", "collection")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    collection: str
    def __init__(self, alias: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ListAliasesResponse(_message.Message):
    __slots__ = ("aliases",)
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[Alias]
    def __init__(self, aliases: _Optional[_Iterable[_Union[Alias, _Mapping]]] = ...) -> None: ...
