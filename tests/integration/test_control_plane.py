"""The control plane against a real etcd: transactions, leases, watches, and riding out an etcd restart."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quiver.control_plane.etcd_client import EtcdClient, WatchEvent
from quiver.control_plane.records import CollectionRecord, Replica, ShardMap, ShardPlacement
from quiver.control_plane.store import ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from quiver.etcd_process import EtcdProcess
from tests.eventually import assert_eventually_async


def make_collection(name: str, shards: int = 2, version: int = 1) -> tuple[CollectionRecord, ShardMap]:
    record = CollectionRecord(
        name=name, dim=8, metric="cosine", index_kind="hnsw", index_params={"M": 16}, shards=shards,
        replication_factor=1, model="test-model", active_version=version, previous_version=None,
        created_unix=1_700_000_000.0,
    )
    placements = tuple(
        ShardPlacement(i, (Replica(f"server-{i}", "serving"),)) for i in range(shards)
    )
    return record, ShardMap(name, version, placements)


async def test_create_get_list_drop(store: ClusterStore) -> None:
    record, shard_map = make_collection("docs")
    await store.create_collection(record, shard_map)

    assert await store.get_collection("docs") == record
    assert await store.get_shard_map("docs", 1) == shard_map
    assert [r.name for r in await store.list_collections()] == ["docs"]
    snapshot = await store.snapshot()
    assert snapshot.active_shard_map("docs") == shard_map

    await store.drop_collection("docs")
    with pytest.raises(NotFound, match="'docs'"):
        await store.get_collection("docs")
    with pytest.raises(NotFound):
        await store.get_shard_map("docs", 1)
    with pytest.raises(NotFound):
        await store.drop_collection("docs")
    assert (await store.snapshot()).collections == {}


async def test_concurrent_creates_of_one_name_exactly_one_wins(etcd: EtcdProcess, etcd_root: str) -> None:
    clients = [EtcdClient([etcd.endpoint]), EtcdClient([etcd.endpoint])]
    try:
        stores = [ClusterStore(c, etcd_root) for c in clients]
        attempts = [s.create_collection(*make_collection("race", shards=n + 1)) for n, s in enumerate(stores)]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], AlreadyExists), outcomes
        assert str(failures[0]) == "collection 'race' already exists"
        # The loser wrote nothing: the stored shard map is the winner's.
        winner = (await stores[0].get_collection("race")).shards
        assert len((await stores[1].snapshot()).shard_maps[("race", 1)].shards) == winner
    finally:
        for c in clients:
            c.close()


async def test_concurrent_updates_are_not_lost(etcd: EtcdProcess, store: ClusterStore, etcd_root: str) -> None:
    await store.create_collection(*make_collection("counter"))
    other = EtcdClient([etcd.endpoint])
    stores = [store, ClusterStore(other, etcd_root)]

    def bump(r: CollectionRecord) -> CollectionRecord:
        return dataclasses.replace(r, previous_version=r.active_version, active_version=r.active_version + 1)

    try:
        await asyncio.gather(*(stores[i % 2].update_collection("counter", bump) for i in range(10)))
    finally:
        other.close()
    record = await store.get_collection("counter")
    assert (record.active_version, record.previous_version) == (11, 10)


async def test_shard_maps_need_their_collection(store: ClusterStore) -> None:
    record, first = make_collection("versions")
    with pytest.raises(NotFound):
        await store.put_shard_map(first)
    await store.create_collection(record, first)
    second = dataclasses.replace(first, version=2)
    await store.put_shard_map(second)
    await store.update_collection("versions", lambda r: dataclasses.replace(r, active_version=2, previous_version=1))
    snapshot = await store.snapshot()
    assert set(snapshot.shard_maps) == {("versions", 1), ("versions", 2)}
    assert snapshot.active_shard_map("versions") == second
    await store.drop_collection("versions")
    assert (await store.snapshot()).shard_maps == {}


async def test_records_of_an_unknown_schema_are_refused(store: ClusterStore, client: EtcdClient) -> None:
    await client.put(store.keys.collection("future"), b'{"schema": 2, "name": "future"}')
    with pytest.raises(FailedPrecondition, match="schema 2"):
        await store.get_collection("future")


async def test_a_dead_servers_record_expires_and_a_closed_one_goes_at_once(store: ClusterStore) -> None:
    dead = await store.register_server("shard-a", "127.0.0.1:7001", ttl=2)
    closed = await store.register_server("shard-b", "127.0.0.1:7002", ttl=2)
    assert {s.server_id: s.address for s in await store.list_servers()} == {
        "shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002",
    }
    await asyncio.sleep(2.5)  # longer than the TTL: only renewals keep the records
    assert len(await store.list_servers()) == 2

    await closed.close()
    assert [s.server_id for s in await store.list_servers()] == ["shard-a"]

    assert dead.keepalive_task is not None
    dead.keepalive_task.cancel()  # the process "dies": no more renewals, no revoke

    async def gone() -> None:
        assert await store.list_servers() == []

    await assert_eventually_async(gone, timeout=dead.granted_ttl + 2.0)


async def test_a_server_whose_lease_is_lost_registers_again(store: ClusterStore, client: EtcdClient) -> None:
    registration = await store.register_server("shard-c", "127.0.0.1:7003", ttl=2)
    try:
        lost = registration.lease_id
        await client.revoke_lease(lost)  # as if etcd had expired it during a long pause

        async def back() -> None:
            assert [s.server_id for s in await store.list_servers()] == ["shard-c"]

        await assert_eventually_async(back, timeout=registration.granted_ttl + 2.0)
        assert registration.lease_id != lost
    finally:
        await registration.close()
    assert await store.list_servers() == []


async def test_watcher_sees_a_new_collection(store: ClusterStore) -> None:
    changes: list[int] = []
    watcher = ClusterWatcher(store, on_change=lambda snapshot: changes.append(snapshot.revision))
    await watcher.start()
    try:
        assert watcher.current.collections == {}
        revision = await store.create_collection(*make_collection("seen"))
        snapshot = await watcher.wait_for(lambda s: "seen" in s.collections, timeout=5)
        assert snapshot.revision >= revision and changes
        assert snapshot.active_shard_map("seen") is not None
    finally:
        await watcher.stop()


async def test_watch_resyncs_after_compaction(store: ClusterStore, client: EtcdClient) -> None:
    start = (await client.get_prefix(store.keys.root)).revision
    await client.put(store.keys.root + "a", b"1")
    last = await client.put(store.keys.root + "b", b"2")
    await client.compact(last)
    events = store.watch(start + 1)
    try:
        event = await asyncio.wait_for(anext(events), timeout=5)
    finally:
        await events.aclose()
    assert event.kind == "resync" and event.revision >= last
    assert [kv.key for kv in event.kvs] == [store.keys.root + "a", store.keys.root + "b"]


async def test_unreachable_etcd_is_unavailable_naming_the_endpoint() -> None:
    async with EtcdClient(["127.0.0.1:1"], timeout=1.0) as dead:
        with pytest.raises(Unavailable, match="127.0.0.1:1"):
            await dead.get("/x")


async def test_watcher_rides_out_an_etcd_restart(tmp_path: Path) -> None:
    with EtcdProcess(tmp_path / "etcd") as etcd:
        async with EtcdClient([etcd.endpoint], timeout=2.0) as client:
            store = ClusterStore(client, root="/restart/")
            await store.create_collection(*make_collection("before"))
            watcher = ClusterWatcher(store, max_backoff=0.5)
            await watcher.start()
            raw: list[WatchEvent] = []
            raw_task = asyncio.create_task(_collect(store.watch(watcher.current.revision + 1), raw))
            try:
                before = watcher.current
                etcd.stop()
                with pytest.raises(Unavailable):
                    await store.snapshot()
                await asyncio.sleep(1.0)  # let the watch notice the outage and start retrying
                assert watcher.current is before and "before" in watcher.current.collections

                etcd.start()
                # The client's channel may still be backing off from the outage for up to a second.
                await _create_when_reachable(store, "after")
                snapshot = await watcher.wait_for(lambda s: "after" in s.collections, timeout=10)
                assert set(snapshot.collections) == {"before", "after"}
                await assert_eventually_async(lambda: len(raw) == 2, timeout=5)
                # Resumed from the last revision + 1: the restart neither lost nor repeated an event.
                assert [e.key for e in raw] == [store.keys.collection("after"), store.keys.shard_map("after", 1)]
            finally:
                raw_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await raw_task
                await watcher.stop()


async def _collect(events: AsyncIterator[WatchEvent], into: list[WatchEvent]) -> None:
    async for event in events:
        into.append(event)


async def _create_when_reachable(store: ClusterStore, name: str) -> None:
    async def attempt() -> None:
        try:
            await store.create_collection(*make_collection(name))
        except Unavailable as exc:
            raise AssertionError(str(exc)) from exc
        except AlreadyExists:
            pass  # an attempt that reported Unavailable had landed after all

    await assert_eventually_async(attempt, timeout=10)
