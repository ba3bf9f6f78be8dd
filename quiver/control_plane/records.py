"""The records Quiver keeps in etcd, as frozen dataclasses with a versioned JSON form.

Every JSON document carries `"schema": 1`. Readers refuse any other schema with FailedPrecondition (a
newer Quiver wrote it; acting on a half-understood record would be worse than stopping), and ignore fields
they do not know, so adding an optional field does not need a new schema. Values are checked on
construction, so a record that exists is a valid one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from quiver.control_plane.keys import check_segment
from quiver.errors import FailedPrecondition, InvalidArgument

SCHEMA = 1
METRICS = ("cosine", "ip", "l2")
INDEX_KINDS = ("hnsw", "ivf_pq", "flat")
# An index version's life (../shared/design/control-plane.md, section 4): building -> ready -> active ->
# previous -> retired, or failed. Writes reach every version that is building, ready, active or previous,
# so any of them can be switched to without missing a write.
VERSION_STATES = ("building", "ready", "active", "previous", "retired", "failed")
WRITABLE_STATES = ("building", "ready", "active", "previous")


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps({"schema": SCHEMA, **body}, sort_keys=True, separators=(",", ":")).encode()


def _loads(kind: str, data: bytes | str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"{kind} record in etcd is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise FailedPrecondition(f"{kind} record in etcd is not a JSON object")
    schema = body.pop("schema", None)
    if schema != SCHEMA:
        raise FailedPrecondition(
            f"{kind} record in etcd has schema {schema!r}, but this Quiver reads only schema {SCHEMA}; "
            "it was probably written by a newer Quiver: upgrade this process"
        )
    return body


def _pick(kind: str, body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    missing = [n for n in names if n not in body]
    if missing:
        raise FailedPrecondition(f"{kind} record in etcd lacks field(s) {', '.join(missing)}")
    return {n: body[n] for n in names}


def _version(what: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise InvalidArgument(f"{what} must be a non-negative integer, got {value!r}")


def _positive(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    dim: int
    metric: str  # one of METRICS
    index_kind: str  # one of INDEX_KINDS
    index_params: dict[str, Any]  # treat as read-only
    shards: int
    replication_factor: int
    model: str  # embedding model tag; "" = none
    active_version: int  # the shard-map version that serves
    previous_version: int | None  # the version it replaced, kept for rollback
    created_unix: float
    # Writes are refused (UNAVAILABLE) while fewer in-sync replicas of their shard are live than this.
    min_in_sync: int = 1
    # The metadata field holding each point's partition key ("" = none): a keyed collection identifies a
    # point by (key, id) and routes it by the key (router/partition_keys.py).
    partition_key_field: str = ""

    def __post_init__(self) -> None:
        check_segment("collection name", self.name)
        _positive("dim", self.dim)
        _positive("shards", self.shards)
        _positive("replication_factor", self.replication_factor)
        if self.metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.index_kind not in INDEX_KINDS:
            raise InvalidArgument(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.index_kind!r}")
        if not isinstance(self.index_params, dict):
            raise InvalidArgument(f"index_params must be a JSON object, got {self.index_params!r}")
        _version("active_version", self.active_version)
        _version("previous_version", self.previous_version)
        _positive("min_in_sync", self.min_in_sync)
        if self.min_in_sync > self.replication_factor:
            raise InvalidArgument(
                f"min_in_sync {self.min_in_sync} exceeds replication_factor {self.replication_factor}: no write could ever be accepted"
            )

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        body = _loads("collection", data)
        optional = {name: body[name] for name in _OPTIONAL[cls] if name in body}
        return cls(**_pick("collection", body, _REQUIRED[cls]), **optional)


@dataclass(frozen=True)
class Replica:
    """One copy of a shard, named by the server holding it: its address is whatever that server's live
    record says now, so a server that comes back on another address keeps its replicas."""

    server_id: str
    state: str  # e.g. "serving", "creating"


@dataclass(frozen=True)
class ShardPlacement:
    """A shard's replica group configuration (PacificA's "configuration", Elasticsearch's in-sync set).

    Writes go to `primary`, which orders them (LSNs) and forwards them to the other members of `in_sync`;
    a write is acknowledged once every member of `in_sync` has it durably. Reads go to `in_sync` only.
    `term` grows by one on every change of primary, so a deposed primary's writes can be told apart and
    refused. Replicas outside `in_sync` are catching up from the primary. Only a transaction comparing the
    shard map's revision changes any of this (ClusterStore.update_placement).
    """

    shard: int
    replicas: tuple[Replica, ...]
    primary: str = ""  # server id; "" (records from before replication) means the first replica
    term: int = 1
    in_sync: tuple[str, ...] | None = None  # None (records from before replication) means every replica

    def __post_init__(self) -> None:
        ids = [r.server_id for r in self.replicas]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"shard {self.shard} places two replicas on one server: {ids}")
        if not ids:
            return
        if not self.primary:
            object.__setattr__(self, "primary", ids[0])
        if self.in_sync is None:
            object.__setattr__(self, "in_sync", tuple(ids))
        else:
            object.__setattr__(self, "in_sync", tuple(self.in_sync))
        _positive("term", self.term)
        unknown = [s for s in self.in_sync_ids if s not in ids]
        if unknown:
            raise InvalidArgument(f"shard {self.shard}: in-sync server(s) {unknown} hold no replica of it")
        if self.primary not in self.in_sync_ids:
            raise InvalidArgument(f"shard {self.shard}: primary {self.primary!r} is not in its in-sync set {list(self.in_sync_ids)}")

    @property
    def in_sync_ids(self) -> tuple[str, ...]:
        return self.in_sync or ()

    @property
    def server_ids(self) -> tuple[str, ...]:
        return tuple(r.server_id for r in self.replicas)

    def catching_up(self) -> tuple[str, ...]:
        """Replicas outside the in-sync set: they serve no reads until they rejoin it."""
        return tuple(s for s in self.server_ids if s not in self.in_sync_ids)


@dataclass(frozen=True)
class VersionSpec:
    """What one index version of a collection is built as. The shard count is its shard map's length."""

    index_kind: str
    index_params: dict[str, Any]  # treat as read-only
    model: str  # embedding model tag; "" = none
    replication_factor: int

    def __post_init__(self) -> None:
        if self.index_kind not in INDEX_KINDS:
            raise InvalidArgument(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.index_kind!r}")
        if not isinstance(self.index_params, dict):
            raise InvalidArgument(f"index_params must be a JSON object, got {self.index_params!r}")
        _positive("replication_factor", self.replication_factor)

    @classmethod
    def of(cls, record: "CollectionRecord") -> "VersionSpec":
        return cls(record.index_kind, dict(record.index_params), record.model, record.replication_factor)


@dataclass(frozen=True)
class ShardMap:
    """One index version of a collection: its spec, its state, and which servers hold each of its shards
    (shards[i].shard == i)."""

    collection: str
    version: int
    shards: tuple[ShardPlacement, ...] = field(default=())
    # None: the collection record's (shard maps written before versions existed were all active ones).
    spec: VersionSpec | None = None
    state: str = "active"
    failure: str = ""  # why, when state is "failed"
    built_from: int | None = None  # the version whose points it was built from
    created_unix: float = 0.0

    def __post_init__(self) -> None:
        check_segment("collection name", self.collection)
        _version("shard map version", self.version)
        _version("built_from", self.built_from)
        if self.state not in VERSION_STATES:
            raise InvalidArgument(f"version state must be one of {', '.join(VERSION_STATES)}, got {self.state!r}")
        for index, placement in enumerate(self.shards):
            if placement.shard != index:
                raise InvalidArgument(
                    f"shard map of {self.collection!r} v{self.version}: entry {index} is for shard "
                    f"{placement.shard}; shards must be listed as 0..n-1 in order"
                )

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        body = _loads("shard map", data)
        _pick("shard map", body, ("collection", "version", "shards"))
        try:
            spec = VersionSpec(**_pick("version spec", body["spec"], tuple(VersionSpec.__dataclass_fields__))) if body.get("spec") else None
            shards = tuple(
                ShardPlacement(
                    shard=p["shard"],
                    replicas=tuple(
                        Replica(r["server_id"], r["state"]) for r in p["replicas"]
                    ),
                    primary=p.get("primary", ""),
                    term=p.get("term", 1),
                    in_sync=tuple(p["in_sync"]) if p.get("in_sync") is not None else None,
                )
                for p in body["shards"]
            )
        except (KeyError, TypeError) as exc:
            raise FailedPrecondition(f"shard map record in etcd is malformed: {exc!r}") from exc
        return cls(
            body["collection"], body["version"], shards, spec=spec, state=body.get("state", "active"),
            failure=body.get("failure", ""), built_from=body.get("built_from"), created_unix=body.get("created_unix", 0.0),
        )


@dataclass(frozen=True)
class AliasRecord:
    """A second name for a collection (`docs` -> `docs_2026_11`): requests naming the alias go to the
    collection it points at, and moving it to another collection is one etcd write, seen by every router on
    its watch (as a version switch is)."""

    alias: str
    collection: str
    updated_unix: float = 0.0

    def __post_init__(self) -> None:
        check_segment("alias", self.alias)
        check_segment("collection name", self.collection)

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        body = _loads("alias", data)
        return cls(**_pick("alias", body, ("alias", "collection")), updated_unix=body.get("updated_unix", 0.0))


@dataclass(frozen=True)
class ServerRecord:
    server_id: str
    address: str  # host:port of the shard server's gRPC endpoint
    started_unix: float

    def __post_init__(self) -> None:
        check_segment("server id", self.server_id)

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        return cls(**_pick("server", _loads("server", data), _FIELDS[cls]))


_FIELDS: dict[type, tuple[str, ...]] = {
    CollectionRecord: tuple(CollectionRecord.__dataclass_fields__),
    ServerRecord: tuple(ServerRecord.__dataclass_fields__),
}
# Fields added after schema 1 was first written: optional on read, so older records still load.
_OPTIONAL: dict[type, tuple[str, ...]] = {CollectionRecord: ("min_in_sync", "partition_key_field")}
_REQUIRED: dict[type, tuple[str, ...]] = {
    kind: tuple(n for n in names if n not in _OPTIONAL.get(kind, ())) for kind, names in _FIELDS.items()
}
