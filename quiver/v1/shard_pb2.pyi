from quiver.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartitionRef(_message.Message):
    __slots__ = ("collection", "shard", "version")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard: int
    version: int
    def __init__(self, collection: _Optional[str] = ..., shard: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class PartitionSpec(_message.Message):
    __slots__ = ("ref", "dim", "metric", "index", "model")
    REF_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    dim: int
    metric: _types_pb2.Metric
    index: _types_pb2.IndexSpec
    model: str
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[_types_pb2.Metric, str]] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class CreatePartitionRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: PartitionSpec
    def __init__(self, spec: _Optional[_Union[PartitionSpec, _Mapping]] = ...) -> None: ...

class CreatePartitionResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class DropPartitionRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ...) -> None: ...

class DropPartitionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionSpec]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionSpec, _Mapping]]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("ref", "ids", "vectors", "metadata", "term", "past_seal")
    REF_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    PAST_SEAL_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[_types_pb2.Metadata]
    term: int
    past_seal: bool
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., metadata: _Optional[_Iterable[_Union[_types_pb2.Metadata, _Mapping]]] = ..., term: _Optional[int] = ..., past_seal: _Optional[bool] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "lsn")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    lsn: int
    def __init__(self, upserted: _Optional[int] = ..., lsn: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ref", "ids", "filter", "term", "past_seal")
    REF_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    PAST_SEAL_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: _types_pb2.Filter
    term: int
    past_seal: bool
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., term: _Optional[int] = ..., past_seal: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "lsn")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    lsn: int
    def __init__(self, deleted: _Optional[int] = ..., lsn: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ref", "ids", "include_vectors")
    REF_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_types_pb2.Point]
    def __init__(self, points: _Optional[_Iterable[_Union[_types_pb2.Point, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("ref", "queries", "k", "filter", "params", "include_metadata", "include_vectors", "packed_hits")
    REF_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    PACKED_HITS_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    queries: bytes
    k: int
    filter: _types_pb2.Filter
    params: _types_pb2.SearchParams
    include_metadata: bool
    include_vectors: bool
    packed_hits: bool
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., queries: _Optional[bytes] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.SearchParams, _Mapping]] = ..., include_metadata: _Optional[bool] = ..., include_vectors: _Optional[bool] = ..., packed_hits: _Optional[bool] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "hits")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.QueryResult]
    hits: _types_pb2.PackedHits
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.QueryResult, _Mapping]]] = ..., hits: _Optional[_Union[_types_pb2.PackedHits, _Mapping]] = ...) -> None: ...

class SearchManyRequest(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, searches: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SearchOutcome(_message.Message):
    __slots__ = ("response", "code", "message", "trailing")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILING_FIELD_NUMBER: _ClassVar[int]
    response: SearchResponse
    code: int
    message: str
    trailing: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, response: _Optional[_Union[SearchResponse, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., trailing: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class SearchManyResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[SearchOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[SearchOutcome, _Mapping]]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("ref", "vectors")
    REF_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    vectors: bytes
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., vectors: _Optional[bytes] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("trained_on",)
    TRAINED_ON_FIELD_NUMBER: _ClassVar[int]
    trained_on: int
    def __init__(self, trained_on: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("lsn",)
    LSN_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    def __init__(self, lsn: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ...) -> None: ...

class PartitionStats(_message.Message):
    __slots__ = ("spec", "point_count", "deleted_count", "index_memory_bytes", "metadata_memory_bytes", "wal_bytes", "last_snapshot_unix", "last_lsn", "trained", "index_params_json", "searches_served", "write_state", "write_fault", "list_compactions", "list_compaction_due")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    WAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_SERVED_FIELD_NUMBER: _ClassVar[int]
    WRITE_STATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_FAULT_FIELD_NUMBER: _ClassVar[int]
    LIST_COMPACTIONS_FIELD_NUMBER: _ClassVar[int]
    LIST_COMPACTION_DUE_FIELD_NUMBER: _ClassVar[int]
    spec: PartitionSpec
    point_count: int
    deleted_count: int
    index_memory_bytes: int
    metadata_memory_bytes: int
    wal_bytes: int
    last_snapshot_unix: float
    last_lsn: int
    trained: bool
    index_params_json: str
    searches_served: int
    write_state: str
    write_fault: str
    list_compactions: int
    list_compaction_due: bool
    def __init__(self, spec: _Optional[_Union[PartitionSpec, _Mapping]] = ..., point_count: _Optional[int] = ..., deleted_count: _Optional[int] = ..., index_memory_bytes: _Optional[int] = ..., metadata_memory_bytes: _Optional[int] = ..., wal_bytes: _Optional[int] = ..., last_snapshot_unix: _Optional[float] = ..., last_lsn: _Optional[int] = ..., trained: _Optional[bool] = ..., index_params_json: _Optional[str] = ..., searches_served: _Optional[int] = ..., write_state: _Optional[str] = ..., write_fault: _Optional[str] = ..., list_compactions: _Optional[int] = ..., list_compaction_due: _Optional[bool] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionStats]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionStats, _Mapping]]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("lsn", "payload")
    LSN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    payload: bytes
    def __init__(self, lsn: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("ref", "term", "primary", "entries")
    REF_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    term: int
    primary: str
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., term: _Optional[int] = ..., primary: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("last_lsn",)
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    last_lsn: int
    def __init__(self, last_lsn: _Optional[int] = ...) -> None: ...

class ReplicaStatusRequest(_message.Message):
    __slots__ = ("ref", "term")
    REF_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    term: int
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., term: _Optional[int] = ...) -> None: ...

class ReplicaStatusResponse(_message.Message):
    __slots__ = ("term", "last_lsn", "last_term")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_lsn: int
    last_term: int
    def __init__(self, term: _Optional[int] = ..., last_lsn: _Optional[int] = ..., last_term: _Optional[int] = ...) -> None: ...

class TruncateLogRequest(_message.Message):
    __slots__ = ("ref", "term", "after_lsn")
    REF_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    term: int
    after_lsn: int
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., term: _Optional[int] = ..., after_lsn: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("ref", "term", "lsn", "data")
    REF_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    term: int
    lsn: int
    data: bytes
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., term: _Optional[int] = ..., lsn: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExportPointsRequest(_message.Message):
    __slots__ = ("ref", "after_slot", "limit", "ids_only")
    REF_FIELD_NUMBER: _ClassVar[int]
    AFTER_SLOT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IDS_ONLY_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    after_slot: int
    limit: int
    ids_only: bool
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., after_slot: _Optional[int] = ..., limit: _Optional[int] = ..., ids_only: _Optional[bool] = ...) -> None: ...

class ExportPointsResponse(_message.Message):
    __slots__ = ("ids", "vectors", "metadata", "last_slot", "done", "total")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LAST_SLOT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[_types_pb2.Metadata]
    last_slot: int
    done: bool
    total: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., metadata: _Optional[_Iterable[_Union[_types_pb2.Metadata, _Mapping]]] = ..., last_slot: _Optional[int] = ..., done: _Optional[bool] = ..., total: _Optional[int] = ...) -> None: ...

class ReadLogRequest(_message.Message):
    __slots__ = ("ref", "after_lsn", "max_bytes")
    REF_FIELD_NUMBER: _ClassVar[int]
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    after_lsn: int
    max_bytes: int
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., after_lsn: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class LoggedWrite(_message.Message):
    __slots__ = ("lsn", "delete", "ids", "vectors", "metadata")
    LSN_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    delete: bool
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[_types_pb2.Metadata]
    def __init__(self, lsn: _Optional[int] = ..., delete: _Optional[bool] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., metadata: _Optional[_Iterable[_Union[_types_pb2.Metadata, _Mapping]]] = ...) -> None: ...

class ReadLogResponse(_message.Message):
    __slots__ = ("writes", "last_lsn", "term")
    WRITES_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    writes: _containers.RepeatedCompositeFieldContainer[LoggedWrite]
    last_lsn: int
    term: int
    def __init__(self, writes: _Optional[_Iterable[_Union[LoggedWrite, _Mapping]]] = ..., last_lsn: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class SealWritesRequest(_message.Message):
    __slots__ = ("ref", "sealed", "reason", "ttl_s")
    REF_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    sealed: bool
    reason: str
    ttl_s: float
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ..., sealed: _Optional[bool] = ..., reason: _Optional[str] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class SealWritesResponse(_message.Message):
    __slots__ = ("last_lsn", "term")
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    last_lsn: int
    term: int
    def __init__(self, last_lsn: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: PartitionRef
    def __init__(self, ref: _Optional[_Union[PartitionRef, _Mapping]] = ...) -> None: ...

class DigestResponse(_message.Message):
    __slots__ = ("point_count", "digest", "last_lsn")
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    point_count: int
    digest: int
    last_lsn: int
    def __init__(self, point_count: _Optional[int] = ..., digest: _Optional[int] = ..., last_lsn: _Optional[int] = ...) -> None: ...
