"""The control plane's less travelled paths, against a real etcd where etcd is involved.

Key parsing (every kind round-trips, anything else is None, padding keeps numeric order, prefixes end in
"/"), the records' JSON form (round trip; schema, missing fields and invalid values refused with the right
error), the watcher (keeps up with changes made while it watches, survives a failing callback, gives up in
`wait_for`), and the store's read-modify-write and drop.

A record or key that does not parse is skipped and reported (control-plane.md §5): it never stops a
snapshot or a watcher.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.keys import KeyLayout, ParsedKey
from quiver.control_plane.records import CollectionRecord, Replica, ServerRecord, ShardMap, ShardPlacement
from quiver.control_plane.store import ClusterSnapshot, ClusterStore
from quiver.control_plane.watcher import ClusterWatcher
from quiver.errors import FailedPrecondition, InvalidArgument
from quiver.etcd_process import EtcdProcess
from tests.eventually import assert_eventually_async

# -- fixtures and builders ------------------------------------------------------------------------


def collection(name: str, shards: int = 2, version: int = 1, **changes: object) -> CollectionRecord:
    record = CollectionRecord(
        name=name, dim=8, metric="cosine", index_kind="hnsw", index_params={"m": 16, "ef_search": 64},
        shards=shards, replication_factor=1, model="test-model", active_version=version,
        previous_version=None, created_unix=1_700_000_000.5,
    )
    return dataclasses.replace(record, **changes)


def shard_map(name: str, shards: int = 2, version: int = 1) -> ShardMap:
    placements = tuple(
        ShardPlacement(i, (Replica(f"server-{i}", "serving"), Replica(f"spare-{i}", "creating")))
        for i in range(shards)
    )
    return ShardMap(name, version, placements)


@pytest.fixture
async def watching(store: ClusterStore) -> AsyncIterator[tuple[ClusterWatcher, list[ClusterSnapshot]]]:
    seen: list[ClusterSnapshot] = []
    watcher = ClusterWatcher(store, on_change=seen.append, max_backoff=0.5)
    await watcher.start()
    try:
        yield watcher, seen
    finally:
        await watcher.stop()


# -- keys -------------------------------------------------------------------------------------------

NAMES = ["a", "ab", "docs-2024_v1.x", "é文字", "x" * 255]
VERSIONS = [0, 1, 9, 10, 11, 100, 12_345_678, 99_999_999]


@pytest.mark.parametrize("root", ["quiver/", "/quiver//", "/a//b/", "//"])
def test_a_root_prefix_that_is_not_one_absolute_path_is_refused(root: str) -> None:
    with pytest.raises(InvalidArgument, match="must look like '/quiver/'"):
        KeyLayout(root)


@pytest.mark.parametrize("root", ["/quiver/", "/quiver", "/tenants/blue/"])
def test_every_key_kind_round_trips_through_parse(root: str) -> None:
    keys = KeyLayout(root)
    assert keys.root.endswith("/")
    for name in NAMES:
        assert keys.parse(keys.collection(name)) == ParsedKey("collection", name)
        assert keys.parse(keys.server(name)) == ParsedKey("server", name)
        for version in VERSIONS:
            assert keys.parse(keys.shard_map(name, version)) == ParsedKey("shard_map", name, version)


MALFORMED = [
    "/other/collections/a",  # another root
    "/tenant/collections/a",  # another root of the same length
    "/tenant/shardmaps/a/00000001",
    "/quivercollections/a",  # the root without its slash
    "/quiver/",
    "/quiver/collections/",  # no name
    "/quiver/collections/a/b",  # two segments
    "/quiver/collections/a/",
    "/quiver/servers/",
    "/quiver/servers/a/b",
    "/quiver/shardmaps/a",  # no version
    "/quiver/shardmaps/a/",
    "/quiver/shardmaps//00000001",  # no name
    "/quiver/shardmaps/a/0000000x",
    "/quiver/shardmaps/a/-0000001",
    "/quiver/shardmaps/a/+0000001",
    "/quiver/shardmaps/a/00000001/extra",
    "/quiver/shardmaps/a/ 0000001",
    "/quiver/nodes/a",  # a kind the layout does not have
    "/quiver/Collections/a",
    "quiver/collections/a",
]


@pytest.mark.parametrize("key", MALFORMED)
def test_keys_outside_the_layout_or_malformed_parse_to_none(key: str) -> None:
    assert KeyLayout("/quiver/").parse(key) is None


@pytest.mark.parametrize(
    "version",
    [
        "0000000²",  # str.isdigit() is true, int() refuses it
        "0000000١",  # str.isdigit() is true, int() reads it as 1
    ],
    ids=["superscript", "arabic_indic"],
)
def test_a_shard_map_key_with_non_ascii_digits_parses_to_none(version: str) -> None:
    assert KeyLayout("/quiver/").parse(f"/quiver/shardmaps/a/{version}") is None


def test_shard_map_keys_sort_in_version_order() -> None:
    keys = KeyLayout()
    shuffled = [VERSIONS[i] for i in (3, 7, 0, 5, 1, 6, 2, 4)]
    by_key = sorted(shuffled, key=lambda v: keys.shard_map("a", v))
    assert by_key == sorted(VERSIONS)


@pytest.mark.parametrize("version", [-1, 100_000_000])
def test_a_version_the_padding_cannot_hold_is_refused(version: int) -> None:
    with pytest.raises(InvalidArgument, match="version"):
        KeyLayout().shard_map("a", version)


async def test_etcd_lists_a_collections_shard_maps_in_version_order_and_only_its_own(store: ClusterStore, client: EtcdClient) -> None:
    for name in ("a", "ab", "a-b"):
        for version in (100, 9, 10, 1):
            await client.put(store.keys.shard_map(name, version), b"{}")
    listed = await client.get_prefix(store.keys.shard_maps_prefix("a"))
    assert [store.keys.parse(kv.key) for kv in listed.kvs] == [ParsedKey("shard_map", "a", v) for v in (1, 9, 10, 100)]


@pytest.mark.parametrize("name", ["", "a/b", "a b", "a\tb", "a\x00b", "x" * 256])
def test_a_name_that_is_not_one_key_segment_is_refused(name: str) -> None:
    keys = KeyLayout()
    for build in (keys.collection, keys.server, keys.shard_maps_prefix):
        with pytest.raises(InvalidArgument):
            build(name)


# -- records ----------------------------------------------------------------------------------------

RECORDS = [
    collection("docs"),
    collection("docs", active_version=3, previous_version=2, model="", index_params={}, metric="l2", index_kind="flat"),
    collection("nested", index_params={"a": [1, 2.5, "x"], "b": {"c": None}}, metric="ip", index_kind="ivf_pq"),
    shard_map("docs", shards=3, version=7),
    ShardMap("empty", 0),
    ServerRecord("shard-1", "10.0.0.1:7001", 1_700_000_000.25),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_round_trip_through_their_json(record: object) -> None:
    data = record.to_json()  # type: ignore[attr-defined]
    assert json.loads(data)["schema"] == 1
    assert type(record).from_json(data) == record  # type: ignore[attr-defined]
    assert type(record).from_json(data.decode()) == record  # type: ignore[attr-defined]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_fields_a_reader_does_not_know_are_ignored(record: object) -> None:
    body = json.loads(record.to_json())  # type: ignore[attr-defined]
    body["added_by_a_newer_quiver"] = {"x": 1}
    assert type(record).from_json(json.dumps(body)) == record  # type: ignore[attr-defined]


def _with(record: object, **changes: object) -> bytes:
    body = json.loads(record.to_json())  # type: ignore[attr-defined]
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return json.dumps(body).encode()


_DROP = object()


@pytest.mark.parametrize("record", RECORDS[::2] + RECORDS[-1:], ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("schema", [2, 0, "1", None, _DROP], ids=["2", "0", "str", "null", "missing"])
def test_a_record_of_another_schema_is_refused_as_failed_precondition(record: object, schema: object) -> None:
    with pytest.raises(FailedPrecondition, match="schema"):
        type(record).from_json(_with(record, schema=schema))  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b'"text"', b"1", b"null"])
def test_a_record_that_is_not_a_json_object_is_refused_as_failed_precondition(data: bytes) -> None:
    for kind in (CollectionRecord, ShardMap, ServerRecord):
        with pytest.raises(FailedPrecondition):
            kind.from_json(data)


@pytest.mark.parametrize("record", RECORDS[::2] + RECORDS[-1:], ids=lambda r: type(r).__name__)
def test_a_record_missing_any_field_is_refused_naming_it(record: object) -> None:
    for name in json.loads(record.to_json()):  # type: ignore[attr-defined]
        if name in ("schema", *OPTIONAL_FIELDS):
            continue
        with pytest.raises(FailedPrecondition, match=name):
            type(record).from_json(_with(record, **{name: _DROP}))  # type: ignore[attr-defined]


# Added to schema 1 later, with defaults: collection fields, then the shard map's version fields.
OPTIONAL_FIELDS = ("min_in_sync", "partition_key_field", "spec", "state", "failure", "built_from", "created_unix")


def test_a_collection_record_written_before_min_in_sync_existed_reads_with_min_in_sync_one() -> None:
    record = collection("docs", replication_factor=3, min_in_sync=2)
    assert CollectionRecord.from_json(record.to_json()).min_in_sync == 2
    assert CollectionRecord.from_json(_with(record, min_in_sync=_DROP)).min_in_sync == 1


def test_a_shard_map_written_before_replication_reads_with_the_first_replica_primary_and_all_in_sync() -> None:
    old = {"schema": 1, "collection": "docs", "version": 1, "shards": [
        {"shard": 0, "replicas": [{"server_id": "a", "state": "serving"}, {"server_id": "b", "state": "serving"}]}]}
    (placement,) = ShardMap.from_json(json.dumps(old)).shards
    assert (placement.primary, placement.term, placement.in_sync_ids) == ("a", 1, ("a", "b"))


@pytest.mark.parametrize("broken", [
    {"primary": "c"},  # primary holds no replica
    {"in_sync": ["b"]},  # primary outside the in-sync set
    {"in_sync": ["a", "z"]},  # in-sync member holds no replica
    {"term": 0},
])
def test_a_placement_that_breaks_the_replica_group_invariants_is_refused(broken: dict[str, object]) -> None:
    shard = {"shard": 0, "replicas": [{"server_id": "a", "state": "serving"}, {"server_id": "b", "state": "serving"}], **broken}
    with pytest.raises(InvalidArgument):
        ShardMap.from_json(json.dumps({"schema": 1, "collection": "docs", "version": 1, "shards": [shard]}))


@pytest.mark.parametrize(
    "broken",
    [
        [{"shard": 0}],
        [{"replicas": []}],
        [{"shard": 0, "replicas": [{"server_id": "s"}]}],
        [{"shard": 0, "replicas": 5}],
        5,
        [7],
    ],
)
def test_a_shard_map_with_malformed_placements_is_refused_as_failed_precondition(broken: object) -> None:
    with pytest.raises(FailedPrecondition, match="malformed"):
        ShardMap.from_json(_with(shard_map("docs"), shards=broken))


INVALID_COLLECTION_VALUES = [
    {"name": "a/b"},
    {"name": ""},
    {"dim": 0},
    {"dim": -8},
    {"dim": True},
    {"dim": "8"},
    {"dim": 8.0},
    {"shards": 0},
    {"replication_factor": 0},
    {"metric": "cos"},
    {"index_kind": "annoy"},
    {"index_params": [["m", 16]]},
    {"active_version": -1},
    {"previous_version": -1},
]


@pytest.mark.parametrize("changes", INVALID_COLLECTION_VALUES, ids=lambda c: "-".join(f"{k}={v!r}" for k, v in c.items()))
def test_a_collection_with_an_invalid_value_is_refused_as_invalid_argument(changes: dict) -> None:
    with pytest.raises(InvalidArgument):
        dataclasses.replace(collection("docs"), **changes)
    with pytest.raises(InvalidArgument):
        CollectionRecord.from_json(_with(collection("docs"), **changes))


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (ShardMap, _with(shard_map("docs"), shards=[{"shard": 1, "replicas": []}, {"shard": 0, "replicas": []}])),
        (ShardMap, _with(shard_map("docs"), version=-1)),
        (ShardMap, _with(shard_map("docs"), collection="a b")),
        (ServerRecord, _with(ServerRecord("s", "a:1", 0.0), server_id="a/b")),
    ],
    ids=["shards_out_of_order", "negative_version", "bad_collection_name", "bad_server_id"],
)
def test_a_shard_map_or_server_with_an_invalid_value_is_refused_as_invalid_argument(kind: type, data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        kind.from_json(data)


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (CollectionRecord, _with(collection("docs"), active_version="1")),
        (CollectionRecord, _with(collection("docs"), previous_version="0")),
        (ShardMap, _with(shard_map("docs"), version="1")),
    ],
    ids=["active_version", "previous_version", "shard_map_version"],
)
def test_a_record_with_a_non_integer_version_is_refused_as_invalid_argument(kind: type, data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        kind.from_json(data)


# -- the watcher ------------------------------------------------------------------------------------


async def test_the_watcher_follows_every_change_made_while_it_watches(
    store: ClusterStore, watching: tuple[ClusterWatcher, list[ClusterSnapshot]]
) -> None:
    watcher, seen = watching
    assert watcher.current.collections == {}

    await store.create_collection(collection("docs"), shard_map("docs"))
    await watcher.wait_for(lambda s: "docs" in s.collections)

    await store.put_shard_map(shard_map("docs", version=2))
    await store.update_collection("docs", lambda r: dataclasses.replace(r, active_version=2, previous_version=1))
    snapshot = await watcher.wait_for(lambda s: s.collections["docs"].active_version == 2)
    assert snapshot.active_shard_map("docs") == shard_map("docs", version=2)

    registration = await store.register_server("shard-9", "127.0.0.1:7009", ttl=5)
    try:
        await watcher.wait_for(lambda s: "shard-9" in s.servers)
    finally:
        await registration.close()
    await watcher.wait_for(lambda s: "shard-9" not in s.servers)

    await store.drop_collection("docs")
    last = await watcher.wait_for(lambda s: not s.collections and not s.shard_maps)
    # Each change became a newer snapshot, announced to on_change in revision order.
    revisions = [s.revision for s in seen]
    assert revisions == sorted(set(revisions)) and revisions[-1] == last.revision


async def test_a_burst_of_changes_ends_in_the_final_state(store: ClusterStore, watching: tuple[ClusterWatcher, list[ClusterSnapshot]]) -> None:
    watcher, _ = watching
    await store.create_collection(collection("burst"), shard_map("burst"))
    await asyncio.gather(
        *(store.update_collection("burst", lambda r, m=f"model-{i}": dataclasses.replace(r, model=m)) for i in range(5)),
        store.create_collection(collection("other"), shard_map("other")),
    )
    final = await store.snapshot()
    snapshot = await watcher.wait_for(lambda s: s.revision >= final.revision)
    assert snapshot.collections == final.collections and snapshot.shard_maps == final.shard_maps


async def test_an_on_change_callback_that_raises_does_not_stop_later_updates(store: ClusterStore) -> None:
    calls: list[ClusterSnapshot] = []

    def flaky(snapshot: ClusterSnapshot) -> None:
        calls.append(snapshot)
        raise RuntimeError("callback broke")

    async def flaky_async(snapshot: ClusterSnapshot) -> None:
        flaky(snapshot)

    for callback in (flaky, flaky_async):
        calls.clear()
        watcher = ClusterWatcher(store, on_change=callback, max_backoff=0.5)
        await watcher.start()
        try:
            for name in ("first", "second", "third"):
                await store.create_collection(collection(f"{name}-{callback.__name__}"), shard_map(f"{name}-{callback.__name__}"))
                await watcher.wait_for(lambda s, n=f"{name}-{callback.__name__}": n in s.collections)
                await assert_eventually_async(lambda n=f"{name}-{callback.__name__}": any(n in c.collections for c in calls))
        finally:
            await watcher.stop()


async def test_wait_for_raises_timeout_error_when_the_predicate_never_holds(
    store: ClusterStore, watching: tuple[ClusterWatcher, list[ClusterSnapshot]]
) -> None:
    watcher, _ = watching
    # Changes keep arriving, none of them the one waited for.
    waiting = asyncio.create_task(watcher.wait_for(lambda s: "never" in s.collections, timeout=1.0))
    for i in range(3):
        await store.create_collection(collection(f"c{i}"), shard_map(f"c{i}"))
    done, _ = await asyncio.wait({waiting}, timeout=30)
    assert waiting in done, "wait_for did not give up"
    with pytest.raises(TimeoutError):
        waiting.result()
    # A predicate that already holds returns the current snapshot at once.
    assert await watcher.wait_for(lambda s: True, timeout=1.0) is watcher.current


async def test_a_snapshot_skips_a_record_that_does_not_parse(store: ClusterStore, client: EtcdClient) -> None:
    await store.create_collection(collection("good"), shard_map("good"))
    await client.put(store.keys.collection("future"), b'{"schema": 2, "name": "future"}')
    snapshot = await store.snapshot()
    assert set(snapshot.collections) == {"good"}
    [(key, reason)] = snapshot.skipped
    assert key == store.keys.collection("future") and "schema 2" in reason


async def test_a_snapshot_skips_a_stray_key_with_a_non_ascii_digit_version(store: ClusterStore, client: EtcdClient) -> None:
    await store.create_collection(collection("good"), shard_map("good"))
    await client.put(store.keys.shard_maps_prefix("good") + "0000000²", b"{}")
    assert set((await store.snapshot()).collections) == {"good"}


async def test_one_bad_record_does_not_stop_the_watcher(
    store: ClusterStore, client: EtcdClient, watching: tuple[ClusterWatcher, list[ClusterSnapshot]]
) -> None:
    watcher, _ = watching
    await client.put(store.keys.collection("future"), b'{"schema": 2, "name": "future"}')
    await store.create_collection(collection("good"), shard_map("good"))
    await watcher.wait_for(lambda s: "good" in s.collections, timeout=5.0)


# -- the store --------------------------------------------------------------------------------------


class _InterleavingClient(EtcdClient):
    """An EtcdClient that runs `before_first_swap` just before its first transaction: a concurrent
    change landing between the store's read and its write, every time rather than by chance."""

    def __init__(self, endpoint: str, before_first_swap: Callable[[], Awaitable[object]]) -> None:
        super().__init__([endpoint])
        self._before: Callable[[], Awaitable[object]] | None = before_first_swap

    async def swap(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        before, self._before = self._before, None
        if before is not None:
            await before()
        return await super().swap(*args, **kwargs)


async def test_update_collection_retries_on_a_concurrent_change_and_keeps_both(etcd: EtcdProcess, store: ClusterStore, etcd_root: str) -> None:
    await store.create_collection(collection("docs"), shard_map("docs"))
    other_update = lambda: store.update_collection("docs", lambda r: dataclasses.replace(r, index_params={"m": 32}))  # noqa: E731
    seen: list[CollectionRecord] = []

    def set_model(record: CollectionRecord) -> CollectionRecord:
        seen.append(record)
        return dataclasses.replace(record, model="model-b")

    interleaving = _InterleavingClient(etcd.endpoint, other_update)
    try:
        stored = await ClusterStore(interleaving, etcd_root).update_collection("docs", set_model)
    finally:
        interleaving.close()
    # The first attempt lost to the other update, so `mutate` ran again on the record that holds it.
    assert [r.index_params for r in seen] == [{"m": 16, "ef_search": 64}, {"m": 32}]
    assert (stored.model, stored.index_params) == ("model-b", {"m": 32})
    assert await store.get_collection("docs") == stored


async def test_concurrent_updates_of_different_fields_are_both_kept(etcd: EtcdProcess, store: ClusterStore, etcd_root: str) -> None:
    await store.create_collection(collection("docs"), shard_map("docs"))
    other = EtcdClient([etcd.endpoint])
    try:
        await asyncio.gather(
            store.update_collection("docs", lambda r: dataclasses.replace(r, model="model-b")),
            ClusterStore(other, etcd_root).update_collection("docs", lambda r: dataclasses.replace(r, replication_factor=3)),
        )
    finally:
        other.close()
    record = await store.get_collection("docs")
    assert (record.model, record.replication_factor) == ("model-b", 3)


async def test_update_collection_refuses_a_rename(store: ClusterStore) -> None:
    await store.create_collection(collection("docs"), shard_map("docs"))
    with pytest.raises(InvalidArgument, match="rename"):
        await store.update_collection("docs", lambda r: dataclasses.replace(r, name="other"))
    assert await store.get_collection("docs") == collection("docs")


async def test_drop_removes_every_shard_map_of_the_collection_and_none_of_a_longer_name(store: ClusterStore) -> None:
    for name in ("a", "ab", "a-b"):
        await store.create_collection(collection(name), shard_map(name))
        await store.put_shard_map(shard_map(name, version=2))
        await store.put_shard_map(shard_map(name, version=10))
    await store.drop_collection("a")
    snapshot = await store.snapshot()
    assert set(snapshot.collections) == {"ab", "a-b"}
    assert set(snapshot.shard_maps) == {(n, v) for n in ("ab", "a-b") for v in (1, 2, 10)}

    await store.drop_collection("ab")
    snapshot = await store.snapshot()
    assert set(snapshot.collections) == {"a-b"}
    assert set(snapshot.shard_maps) == {("a-b", v) for v in (1, 2, 10)}


def test_a_snapshot_has_no_active_shard_map_for_a_missing_collection_or_a_missing_version() -> None:
    from quiver.control_plane.records import CollectionRecord, Replica, ShardMap, ShardPlacement
    from quiver.control_plane.store import ClusterSnapshot

    record = CollectionRecord("docs", 4, "cosine", "flat", {}, 1, 1, "", 2, 1, 0.0)
    map_v1 = ShardMap("docs", 1, (ShardPlacement(0, (Replica("s1", "serving"),)),))
    map_v2 = ShardMap("docs", 2, (ShardPlacement(0, (Replica("s2", "serving"),)),))
    snapshot = ClusterSnapshot(7, {"docs": record}, {("docs", 1): map_v1, ("docs", 2): map_v2}, {})
    assert snapshot.active_shard_map("docs") == map_v2  # the record's active version, not the first
    assert snapshot.active_shard_map("nope") is None
    only_v1 = ClusterSnapshot(7, {"docs": record}, {("docs", 1): map_v1}, {})
    assert only_v1.active_shard_map("docs") is None
