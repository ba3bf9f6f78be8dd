"""Index versions in a real etcd: numbering, states, and the one-transaction cutover, rollback and retire."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from quiver.control_plane.records import Replica, ShardMap, ShardPlacement, VersionSpec
from quiver.control_plane.store import ClusterStore
from quiver.control_plane import versions
from quiver.errors import Aborted, FailedPrecondition, InvalidArgument
from tests.integration.test_control_plane import make_collection

IVF = VersionSpec("ivf_pq", {"nlist": 16, "m": 4}, "test-model", 2)


def new_version(name: str, version: int, shards: int = 3, spec: VersionSpec = IVF, state: str = "serving") -> ShardMap:
    placements = tuple(
        ShardPlacement(i, (Replica(f"server-{i}", state), Replica(f"server-{i + 1}", state))) for i in range(shards)
    )
    return ShardMap(name, version, placements, spec=spec, state="building", built_from=1)


async def ready_v2(store: ClusterStore, name: str = "docs") -> None:
    record, shard_map = make_collection(name)
    await store.create_collection(record, shard_map)
    await versions.add_version(store, new_version(name, 2))
    await versions.set_state(store, name, 2, "ready")


async def test_a_shard_map_from_before_versions_is_the_active_version_with_the_collections_spec(store: ClusterStore) -> None:
    record, shard_map = make_collection("docs")
    await store.create_collection(record, shard_map)
    [stored] = await versions.list_versions(store, "docs")
    assert stored.state == "active" and stored.spec is None
    assert versions.spec_of(record, stored) == VersionSpec("hnsw", {"M": 16}, "test-model", 1)


async def test_a_new_version_is_numbered_after_every_earlier_one_and_starts_building(store: ClusterStore) -> None:
    record, shard_map = make_collection("docs")
    await store.create_collection(record, shard_map)
    with pytest.raises(Aborted, match="the next version is v2, not v3"):
        await versions.add_version(store, new_version("docs", 3))
    with pytest.raises(InvalidArgument, match="starts as building"):
        await versions.add_version(store, dataclasses.replace(new_version("docs", 2), state="ready"))
    await versions.add_version(store, new_version("docs", 2))
    with pytest.raises(Aborted):  # v2 exists now: a second add of it loses
        await versions.add_version(store, new_version("docs", 2))
    listed = await versions.list_versions(store, "docs")
    assert [(m.version, m.state) for m in listed] == [(1, "active"), (2, "building")]
    assert listed[1].spec == IVF and listed[1].created_unix > 0
    assert (await store.get_collection("docs")).active_version == 1  # serving is untouched


async def test_cutover_switches_the_active_version_and_the_collections_spec_in_one_transaction(store: ClusterStore) -> None:
    await ready_v2(store)
    record, _ = await versions.cutover(store, "docs", expected_active=1, target=2)
    stored = await store.get_collection("docs")
    assert stored == record
    assert (stored.active_version, stored.previous_version) == (2, 1)
    assert (stored.index_kind, stored.index_params, stored.shards, stored.replication_factor) == ("ivf_pq", {"nlist": 16, "m": 4}, 3, 2)
    assert [(m.version, m.state) for m in await versions.list_versions(store, "docs")] == [(1, "previous"), (2, "active")]
    assert (await store.snapshot()).active_shard_map("docs").version == 2


async def test_cutover_is_refused_unless_the_new_version_is_ready_with_every_replica_serving_in_sync(store: ClusterStore) -> None:
    record, shard_map = make_collection("docs")
    await store.create_collection(record, shard_map)
    await versions.add_version(store, new_version("docs", 2))
    with pytest.raises(FailedPrecondition, match="v2 is building, not ready"):
        await versions.cutover(store, "docs", 1, 2)
    await versions.set_state(store, "docs", 2, "ready")
    await store.update_placement("docs", 2, 1, lambda p: dataclasses.replace(p, in_sync=(p.primary,)))
    with pytest.raises(FailedPrecondition, match="shard 1 replica on server-2 is not in sync"):
        await versions.cutover(store, "docs", 1, 2)
    assert (await store.get_collection("docs")).active_version == 1


async def test_of_two_concurrent_cutovers_one_wins_and_the_other_is_refused(store: ClusterStore) -> None:
    await ready_v2(store)
    results = await asyncio.gather(
        versions.cutover(store, "docs", 1, 2), versions.cutover(store, "docs", 1, 2), return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    [refused] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(refused, FailedPrecondition), refused
    with pytest.raises(FailedPrecondition, match="the active version is v2, not v1"):
        await versions.cutover(store, "docs", 1, 2)


async def test_rollback_restores_the_previous_version_and_leaves_the_other_ready(store: ClusterStore) -> None:
    await ready_v2(store)
    await versions.cutover(store, "docs", 1, 2)
    record, _ = await versions.rollback(store, "docs", expected_active=2)
    assert (record.active_version, record.previous_version, record.index_kind, record.shards) == (1, None, "hnsw", 2)
    assert [(m.version, m.state) for m in await versions.list_versions(store, "docs")] == [(1, "active"), (2, "ready")]
    with pytest.raises(FailedPrecondition, match="no previous version"):
        await versions.rollback(store, "docs", expected_active=1)
    await versions.cutover(store, "docs", 1, 2)  # it kept every write, so it can be cut over to again
    assert (await store.get_collection("docs")).active_version == 2


async def test_a_second_cutover_retires_the_older_previous_version(store: ClusterStore) -> None:
    await ready_v2(store)
    await versions.cutover(store, "docs", 1, 2)
    await versions.add_version(store, new_version("docs", 3, spec=dataclasses.replace(IVF, index_kind="flat", index_params={})))
    await versions.set_state(store, "docs", 3, "ready")
    await versions.cutover(store, "docs", 2, 3)
    states = [(m.version, m.state) for m in await versions.list_versions(store, "docs")]
    assert states == [(1, "retired"), (2, "previous"), (3, "active")]


async def test_state_moves_are_checked_and_retiring_the_previous_version_ends_the_rollback(store: ClusterStore) -> None:
    await ready_v2(store)
    with pytest.raises(FailedPrecondition, match="v1 is active; it cannot become retired; a cutover or rollback"):
        await versions.set_state(store, "docs", 1, "retired")
    failed, _ = await versions.set_state(store, "docs", 2, "failed", failure="shard 0: out of disk")
    assert (failed.state, failed.failure) == ("failed", "shard 0: out of disk")
    with pytest.raises(FailedPrecondition, match="v2 is failed; it cannot become ready"):
        await versions.set_state(store, "docs", 2, "ready")
    await versions.add_version(store, new_version("docs", 3))
    await versions.set_state(store, "docs", 3, "ready")
    await versions.cutover(store, "docs", 1, 3)
    await versions.set_state(store, "docs", 1, "retired")
    assert (await store.get_collection("docs")).previous_version is None
    with pytest.raises(FailedPrecondition, match="no previous version"):
        await versions.rollback(store, "docs", 3)


async def test_a_cutover_comparing_the_active_maps_revision_is_refused_when_the_map_changed_since(store: ClusterStore) -> None:
    """The reindex seals v1, then switches only if v1's map is as it was when sealed (no failover in between)."""
    await ready_v2(store)
    sealed_at = await versions.map_revision(store, "docs", 1)
    await store.update_placement("docs", 1, 0, lambda p: dataclasses.replace(p, term=p.term + 1))  # a promotion
    with pytest.raises(FailedPrecondition, match="changed since it was sealed"):
        await versions.cutover(store, "docs", 1, 2, active_revision=sealed_at)
    assert (await store.get_collection("docs")).active_version == 1
    fresh = await versions.map_revision(store, "docs", 1)
    assert (await versions.cutover(store, "docs", 1, 2, active_revision=fresh))[0].active_version == 2
