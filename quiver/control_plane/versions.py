"""Index versions of a collection in etcd: adding one, moving it through its states, and the atomic
cutover, rollback and retirement (../shared/design/control-plane.md, section 4).

A version is its shard map (key `shardmaps/{collection}/{version}`), which carries its spec and state. The
collection record names the active version and the previous one, and mirrors the active version's spec,
so a reader that knows nothing of versions still sees the spec that serves. Every change here is one etcd
transaction comparing the mod_revision of each record it read: a cutover that raced another, or a version
that changed state meanwhile, is refused (FailedPrecondition), never half applied.
"""
from __future__ import annotations

import time
from dataclasses import replace

from quiver.control_plane.records import CollectionRecord, ShardMap, VersionSpec
from quiver.control_plane.store import ClusterStore
from quiver.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound

# The moves a version may make outside a cutover or rollback (which move active <-> previous).
_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "building": ("ready", "failed", "retired"),
    "ready": ("building", "failed", "retired"),
    "failed": ("retired",),
    "previous": ("retired",),
    "active": (),
    "retired": (),
}


def spec_of(record: CollectionRecord, shard_map: ShardMap) -> VersionSpec:
    """A version's spec: its own, or (maps written before versions existed) the collection's."""
    return shard_map.spec or VersionSpec.of(record)


def with_active(record: CollectionRecord, active: ShardMap, previous: int | None) -> CollectionRecord:
    spec = spec_of(record, active)
    return replace(
        record, active_version=active.version, previous_version=previous, index_kind=spec.index_kind,
        index_params=dict(spec.index_params), model=spec.model, replication_factor=spec.replication_factor,
        shards=len(active.shards), min_in_sync=min(record.min_in_sync, spec.replication_factor),
    )


async def list_versions(store: ClusterStore, name: str) -> list[ShardMap]:
    result = await store.client.get_prefix(store.keys.shard_maps_prefix(name))
    return sorted((ShardMap.from_json(kv.value) for kv in result.kvs), key=lambda m: m.version)


async def add_version(store: ClusterStore, shard_map: ShardMap) -> int:
    """Store a new version (state "building"), numbered after every version the collection has had.
    Returns the etcd revision. Aborted if the collection or its versions changed meanwhile (re-read, retry)."""
    name = shard_map.collection
    if shard_map.state != "building":
        raise InvalidArgument(f"a new version starts as building, not {shard_map.state!r}")
    collection_revision, record = await store.get_collection_at(name)
    existing = await list_versions(store, name)
    newest = max([m.version for m in existing] + [record.active_version])
    if shard_map.version != newest + 1:
        raise Aborted(f"collection {name!r}: the next version is v{newest + 1}, not v{shard_map.version}")
    key = store.keys.shard_map(name, shard_map.version)
    stamped = replace(shard_map, created_unix=shard_map.created_unix or time.time())
    return await store.client.swap(
        {store.keys.collection(name): collection_revision, key: 0}, put={key: stamped.to_json()},
    )


async def _version_kv(store: ClusterStore, name: str, version: int) -> tuple[int, ShardMap]:
    kv = await store.client.get(store.keys.shard_map(name, version))
    if kv is None:
        raise NotFound(f"collection {name!r} has no version {version}")
    return kv.mod_revision, ShardMap.from_json(kv.value)


async def set_state(store: ClusterStore, name: str, version: int, state: str, failure: str = "") -> tuple[ShardMap, int]:
    """Move a version to `state` (building <-> ready, -> failed, -> retired): one transaction on its shard
    map's revision. FailedPrecondition for a move its state does not allow (an active version is left by
    a cutover or rollback only)."""
    revision, shard_map = await _version_kv(store, name, version)
    if state == shard_map.state:
        return shard_map, revision
    if state not in _TRANSITIONS.get(shard_map.state, ()):
        raise FailedPrecondition(
            f"collection {name!r} v{version} is {shard_map.state}; it cannot become {state}"
            + ("; a cutover or rollback moves the active version" if shard_map.state == "active" else "")
        )
    updated = replace(shard_map, state=state, failure=failure if state == "failed" else shard_map.failure)
    record_revision, record = await store.get_collection_at(name)
    compares = {store.keys.shard_map(name, version): revision}
    put = {store.keys.shard_map(name, version): updated.to_json()}
    if state == "retired" and record.previous_version == version:
        # The collection's rollback target goes with it.
        compares[store.keys.collection(name)] = record_revision
        put[store.keys.collection(name)] = replace(record, previous_version=None).to_json()
    try:
        written = await store.client.swap(compares, put=put)
    except Aborted:
        raise FailedPrecondition(f"collection {name!r} v{version} changed meanwhile; look again and retry") from None
    return updated, written


async def mark_serving(store: ClusterStore, name: str, version: int) -> tuple[ShardMap, int]:
    """A new version's replicas marked serving once its partitions exist on their servers (one transaction
    on the map's revision; Aborted if it changed meanwhile)."""
    revision, shard_map = await _version_kv(store, name, version)
    serving = replace(shard_map, shards=tuple(
        replace(p, replicas=tuple(replace(r, state="serving") for r in p.replicas)) for p in shard_map.shards
    ))
    key = store.keys.shard_map(name, version)
    return serving, await store.client.swap({key: revision}, put={key: serving.to_json()})


def _unready(shard_map: ShardMap) -> list[str]:
    """Why a version's shards cannot serve yet (empty: every replica is serving and in sync)."""
    problems = []
    for placement in shard_map.shards:
        for replica in placement.replicas:
            if replica.state != "serving":
                problems.append(f"shard {placement.shard} replica on {replica.server_id} is {replica.state}")
            elif replica.server_id not in placement.in_sync_ids:
                problems.append(f"shard {placement.shard} replica on {replica.server_id} is not in sync")
    return problems


async def map_revision(store: ClusterStore, name: str, version: int) -> int:
    """The mod revision of a version's shard map now (to compare in a later transaction)."""
    return (await _version_kv(store, name, version))[0]


async def _switch(
    store: ClusterStore, name: str, expected_active: int, target: int, *, rollback: bool, active_revision: int | None = None,
) -> tuple[CollectionRecord, int]:
    what = "rollback" if rollback else "cutover"
    record_revision, record = await store.get_collection_at(name)
    if record.active_version != expected_active:
        raise FailedPrecondition(
            f"{what} of {name!r}: the active version is v{record.active_version}, not v{expected_active} as expected "
            "(another cutover or rollback won); look again before switching"
        )
    if target == expected_active:
        raise FailedPrecondition(f"{what} of {name!r}: v{target} is already active")
    target_revision, target_map = await _version_kv(store, name, target)
    read_revision, active_map = await _version_kv(store, name, expected_active)
    if active_revision is not None and read_revision != active_revision:
        raise FailedPrecondition(
            f"{what} of {name!r}: v{expected_active}'s shard map changed since it was sealed (a failover?); look again and retry"
        )
    active_revision = read_revision
    wanted = "previous" if rollback else "ready"
    if target_map.state != wanted:
        raise FailedPrecondition(f"{what} of {name!r}: v{target} is {target_map.state}, not {wanted}")
    if rollback and record.previous_version != target:
        raise FailedPrecondition(f"rollback of {name!r}: its previous version is {record.previous_version}, not v{target}")
    problems = _unready(target_map)
    if problems:
        raise FailedPrecondition(f"{what} of {name!r} to v{target} refused: " + "; ".join(problems[:5]))
    compares = {
        store.keys.collection(name): record_revision,
        store.keys.shard_map(name, target): target_revision,
        store.keys.shard_map(name, expected_active): active_revision,
    }
    put = {
        store.keys.shard_map(name, target): replace(target_map, state="active").to_json(),
        # Its spec is written down as it leaves: a map from before versions took the collection's, which
        # from now on describes the other version.
        store.keys.shard_map(name, expected_active): replace(
            active_map, state="ready" if rollback else "previous", spec=spec_of(record, active_map),
        ).to_json(),
    }
    # A rollback leaves the version it left "ready": it went on taking every write, so it can be cut over to
    # again. A cutover retires the version that was previous before it (one rollback target at a time).
    previous = None if rollback else expected_active
    if not rollback and record.previous_version is not None and record.previous_version not in (target, expected_active):
        old_revision, old_map = await _version_kv(store, name, record.previous_version)
        compares[store.keys.shard_map(name, record.previous_version)] = old_revision
        put[store.keys.shard_map(name, record.previous_version)] = replace(old_map, state="retired").to_json()
    put[store.keys.collection(name)] = with_active(record, target_map, previous).to_json()
    try:
        written = await store.client.swap(compares, put=put)
    except Aborted:
        raise FailedPrecondition(
            f"{what} of {name!r}: the collection or one of its versions changed meanwhile (a concurrent cutover?); look again"
        ) from None
    return with_active(record, target_map, previous), written


async def cutover(
    store: ClusterStore, name: str, expected_active: int, target: int, *, active_revision: int | None = None,
) -> tuple[CollectionRecord, int]:
    """Make `target` (ready, every replica serving and in sync) the active version, if `expected_active`
    still is (and, given `active_revision`, its shard map is still at that revision); it becomes previous.
    One transaction; FailedPrecondition otherwise. Returns the new record and the transaction's revision."""
    return await _switch(store, name, expected_active, target, rollback=False, active_revision=active_revision)


async def rollback(
    store: ClusterStore, name: str, expected_active: int, *, active_revision: int | None = None,
) -> tuple[CollectionRecord, int]:
    """Make the previous version active again, if `expected_active` still is; the one left becomes ready."""
    record = await store.get_collection(name)
    if record.previous_version is None:
        raise FailedPrecondition(f"rollback of {name!r}: it has no previous version to go back to")
    return await _switch(store, name, expected_active, record.previous_version, rollback=True, active_revision=active_revision)
