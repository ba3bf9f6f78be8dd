"""Wire conversions for metrics, index specs and partition specs."""
from __future__ import annotations

from typing import Any

from quiver.errors import InvalidArgument
from quiver.specs import PartitionKey, PartitionSpec
from quiver.v1 import shard_pb2, types_pb2

_METRIC_NAMES = {types_pb2.METRIC_UNSPECIFIED: "cosine", types_pb2.COSINE: "cosine", types_pb2.IP: "ip", types_pb2.L2: "l2"}
_METRIC_ENUMS = {"cosine": types_pb2.COSINE, "ip": types_pb2.IP, "l2": types_pb2.L2}
_PARAM_FIELDS = {
    "hnsw": ("m", "ef_construction", "ef_search"),
    "ivf_pq": ("nlist", "m", "nbits", "nprobe", "train_size", "refine"),
    "flat": (),
}


def metric_from_proto(value: int) -> str:
    try:
        return _METRIC_NAMES[value]
    except KeyError:
        raise InvalidArgument(f"unknown metric enum value {value}; use COSINE, IP or L2") from None


def metric_to_proto(metric: str) -> int:
    return _METRIC_ENUMS[metric]


def index_from_proto(spec: types_pb2.IndexSpec) -> tuple[str, dict[str, Any]]:
    """(kind, params); an unset spec means HNSW with defaults. Zero-valued params are left out (= default)."""
    kind = spec.WhichOneof("kind") or "hnsw"
    message = getattr(spec, kind)
    params = {name: getattr(message, name) for name in _PARAM_FIELDS[kind] if getattr(message, name)}
    return kind, params


def index_to_proto(kind: str, params: dict[str, Any]) -> types_pb2.IndexSpec:
    spec = types_pb2.IndexSpec()
    getattr(spec, kind).SetInParent()
    for name in _PARAM_FIELDS[kind]:
        if params.get(name):
            setattr(getattr(spec, kind), name, int(params[name]))
    return spec


def key_from_proto(ref: shard_pb2.PartitionRef) -> PartitionKey:
    if not ref.collection:
        raise InvalidArgument("ref.collection is empty; name the partition's collection")
    return PartitionKey(ref.collection, ref.shard, ref.version)


def key_to_proto(key: PartitionKey) -> shard_pb2.PartitionRef:
    return shard_pb2.PartitionRef(collection=key.collection, shard=key.shard, version=key.version)


def partition_spec_from_proto(spec: shard_pb2.PartitionSpec) -> PartitionSpec:
    kind, params = index_from_proto(spec.index)
    return PartitionSpec(key_from_proto(spec.ref), spec.dim, metric_from_proto(spec.metric), kind, params, spec.model)


def partition_spec_to_proto(spec: PartitionSpec) -> shard_pb2.PartitionSpec:
    return shard_pb2.PartitionSpec(
        ref=key_to_proto(spec.key),
        dim=spec.dim,
        metric=metric_to_proto(spec.metric),
        index=index_to_proto(spec.index_kind, spec.index_params),
        model=spec.model,
    )
