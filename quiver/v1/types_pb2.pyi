from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    COSINE: _ClassVar[Metric]
    IP: _ClassVar[Metric]
    L2: _ClassVar[Metric]

class SearchStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[SearchStrategy]
    ANN: _ClassVar[SearchStrategy]
    ANN_FILTERED: _ClassVar[SearchStrategy]
    EXACT: _ClassVar[SearchStrategy]
    EXACT_FILTERED: _ClassVar[SearchStrategy]
    ANN_POST_FILTERED: _ClassVar[SearchStrategy]
METRIC_UNSPECIFIED: Metric
COSINE: Metric
IP: Metric
L2: Metric
STRATEGY_UNSPECIFIED: SearchStrategy
ANN: SearchStrategy
ANN_FILTERED: SearchStrategy
EXACT: SearchStrategy
EXACT_FILTERED: SearchStrategy
ANN_POST_FILTERED: SearchStrategy

class HnswParams(_message.Message):
    __slots__ = ("m", "ef_construction", "ef_search")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    ef_search: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class IvfPqParams(_message.Message):
    __slots__ = ("nlist", "m", "nbits", "nprobe", "train_size", "refine")
    NLIST_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    NBITS_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    nlist: int
    m: int
    nbits: int
    nprobe: int
    train_size: int
    refine: int
    def __init__(self, nlist: _Optional[int] = ..., m: _Optional[int] = ..., nbits: _Optional[int] = ..., nprobe: _Optional[int] = ..., train_size: _Optional[int] = ..., refine: _Optional[int] = ...) -> None: ...

class FlatParams(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexSpec(_message.Message):
    __slots__ = ("hnsw", "ivf_pq", "flat")
    HNSW_FIELD_NUMBER: _ClassVar[int]
    IVF_PQ_FIELD_NUMBER: _ClassVar[int]
    FLAT_FIELD_NUMBER: _ClassVar[int]
    hnsw: HnswParams
    ivf_pq: IvfPqParams
    flat: FlatParams
    def __init__(self, hnsw: _Optional[_Union[HnswParams, _Mapping]] = ..., ivf_pq: _Optional[_Union[IvfPqParams, _Mapping]] = ..., flat: _Optional[_Union[FlatParams, _Mapping]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("string_value", "int_value", "float_value", "bool_value", "string_list")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    float_value: float
    bool_value: bool
    string_list: StringList
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., string_list: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Value]
    def __init__(self, fields: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("eq", "range", "exists", "contains")
    EQ_FIELD_NUMBER: _ClassVar[int]
    IN_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    AND_FIELD_NUMBER: _ClassVar[int]
    OR_FIELD_NUMBER: _ClassVar[int]
    NOT_FIELD_NUMBER: _ClassVar[int]
    eq: FieldEq
    range: FieldRange
    exists: FieldExists
    contains: FieldContains
    def __init__(self, eq: _Optional[_Union[FieldEq, _Mapping]] = ..., range: _Optional[_Union[FieldRange, _Mapping]] = ..., exists: _Optional[_Union[FieldExists, _Mapping]] = ..., contains: _Optional[_Union[FieldContains, _Mapping]] = ..., **kwargs) -> None: ...

class FieldEq(_message.Message):
    __slots__ = ("field", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: Value
    def __init__(self, field: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class FieldIn(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class FieldRange(_message.Message):
    __slots__ = ("field", "gt", "gte", "lt", "lte")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    field: str
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, field: _Optional[str] = ..., gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class FieldExists(_message.Message):
    __slots__ = ("field",)
    FIELD_FIELD_NUMBER: _ClassVar[int]
    field: str
    def __init__(self, field: _Optional[str] = ...) -> None: ...

class FieldContains(_message.Message):
    __slots__ = ("field", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class SearchParams(_message.Message):
    __slots__ = ("ef_search", "nprobe", "exact")
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    ef_search: int
    nprobe: int
    exact: bool
    def __init__(self, ef_search: _Optional[int] = ..., nprobe: _Optional[int] = ..., exact: _Optional[bool] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("ids", "scores", "metadata", "vectors", "strategy", "estimated_cost_us", "filter_matches")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_US_FIELD_NUMBER: _ClassVar[int]
    FILTER_MATCHES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    metadata: _containers.RepeatedCompositeFieldContainer[Metadata]
    vectors: bytes
    strategy: SearchStrategy
    estimated_cost_us: float
    filter_matches: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., metadata: _Optional[_Iterable[_Union[Metadata, _Mapping]]] = ..., vectors: _Optional[bytes] = ..., strategy: _Optional[_Union[SearchStrategy, str]] = ..., estimated_cost_us: _Optional[float] = ..., filter_matches: _Optional[int] = ...) -> None: ...

class PackedHits(_message.Message):
    __slots__ = ("counts", "scores", "id_lengths", "ids", "strategies", "estimated_cost_us", "filter_matches")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ID_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_US_FIELD_NUMBER: _ClassVar[int]
    FILTER_MATCHES_FIELD_NUMBER: _ClassVar[int]
    counts: bytes
    scores: bytes
    id_lengths: bytes
    ids: bytes
    strategies: bytes
    estimated_cost_us: bytes
    filter_matches: bytes
    def __init__(self, counts: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., id_lengths: _Optional[bytes] = ..., ids: _Optional[bytes] = ..., strategies: _Optional[bytes] = ..., estimated_cost_us: _Optional[bytes] = ..., filter_matches: _Optional[bytes] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("id", "vector", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: bytes
    metadata: Metadata
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[bytes] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...
