"""Collection lifecycle through the router's admin API against fake shards and the real etcd: failed creates
roll back in etcd and on the shards, refused creates write nothing, drops finish with a server down, and of
two concurrent creates of one name exactly one wins."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import numpy as np
import pytest

from quiver.client import AsyncClient
from quiver.control_plane.records import CollectionRecord
from quiver.errors import ERRORS_BY_CODE, AlreadyExists, FailedPrecondition, NotFound, Unavailable
from quiver.v1 import router_pb2
from router.admin import place_shards
from router.catch_up import SnapshotCatchUp
from router.config import RouterConfig
from router.server import RouterServer
from tests.eventually import assert_eventually_async
from tests.fake_shard import FakeCluster, fake_cluster, unit_rows

DIM = 8


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        yield running


def partitions(cluster: FakeCluster, name: str) -> list[list[int]]:
    """The shard numbers of `name` that each fake holds."""
    return [sorted(s for (c, s, _) in fake.partitions if c == name) for fake in cluster.fakes]


def serving(router: RouterServer, name: str) -> bool:
    shard_map = router.watcher.current.active_shard_map(name)
    return shard_map is not None and all(r.state == "serving" for p in shard_map.shards for r in p.replicas)


async def assert_gone_from_etcd(cluster: FakeCluster, name: str) -> None:
    with pytest.raises(NotFound):
        await cluster.store.get_collection(name)
    snapshot = await cluster.store.snapshot()
    assert name not in snapshot.collections and not [k for k in snapshot.shard_maps if k[0] == name]


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE], ids=lambda c: c.name)
async def test_a_failed_partition_create_rolls_back_the_claim_and_the_partitions_made(cluster, code):
    cluster.fakes[1].fail("CreatePartition", code)
    with pytest.raises(ERRORS_BY_CODE[code], match="CreatePartition"):
        await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    await assert_gone_from_etcd(cluster, "docs")
    assert partitions(cluster, "docs") == [[], [], []]
    assert [[r.ref.shard for r in cluster.fakes[f].requests("DropPartition")] for f in (0, 2)] == [[0], [2]]
    cluster.fakes[1].heal()
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)  # the name is free again
    assert partitions(cluster, "docs") == [[0], [1], [2]]


async def test_a_replication_factor_above_the_live_servers_is_refused_and_writes_nothing(cluster):
    with pytest.raises(FailedPrecondition, match="replication_factor 4 needs at least 4 live shard servers; 3 registered"):
        await cluster.client.create_collection("docs", DIM, index="flat", shards=2, replication_factor=4)
    await assert_gone_from_etcd(cluster, "docs")
    assert not [r for f in cluster.fakes for r in f.requests("CreatePartition")]
    await cluster.client.create_collection("docs", DIM, index="flat", shards=2, replication_factor=3)
    assert partitions(cluster, "docs") == [[0, 1], [0, 1], [0, 1]]


async def test_a_drop_with_one_server_down_removes_the_collection_and_the_live_partitions(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    await cluster.client.upsert("docs", [f"p{i}" for i in range(30)], unit_rows(np.random.default_rng(0), 30, DIM))
    await cluster.fakes[1].stop()
    await cluster.client.drop_collection("docs")
    await assert_gone_from_etcd(cluster, "docs")
    assert partitions(cluster, "docs") == [[], [1], []]  # the down server keeps an orphan
    with pytest.raises(NotFound):
        await cluster.client.search("docs", np.ones(DIM, np.float32), 3)


async def test_a_recreate_replaces_an_orphan_partition_left_by_a_drop_that_missed_a_server(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    await cluster.client.upsert("docs", [f"p{i}" for i in range(30)], unit_rows(np.random.default_rng(0), 30, DIM))
    cluster.fakes[1].fail("DropPartition", grpc.StatusCode.UNAVAILABLE)
    await cluster.client.drop_collection("docs")
    cluster.fakes[1].heal()
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    assert cluster.fakes[1].point_ids("docs") == set()  # the old points are not inherited
    assert (await cluster.client.search("docs", np.ones(DIM, np.float32), 3))[0].ids == []


async def test_a_recreate_with_another_definition_replaces_an_orphan_partition(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    cluster.fakes[1].fail("DropPartition", grpc.StatusCode.UNAVAILABLE)
    await cluster.client.drop_collection("docs")
    cluster.fakes[1].heal()
    await cluster.client.create_collection("docs", 2 * DIM, index="flat", shards=3)
    assert [p.spec.dim for f in cluster.fakes for p in f.partitions.values()] == [2 * DIM] * 3


async def test_a_collection_is_not_served_until_every_partition_is_created(cluster):
    cluster.fakes[2].freeze("CreatePartition")
    creating = asyncio.create_task(cluster.client.create_collection("docs", DIM, index="flat", shards=3))
    await assert_eventually_async(lambda: "docs" in cluster.router.watcher.current.collections)
    with pytest.raises(FailedPrecondition, match="being created"):
        await cluster.client.search("docs", np.ones(DIM, np.float32), 3)
    assert not cluster.data_requests()
    cluster.fakes[2].release("CreatePartition")
    await creating
    assert (await cluster.client.search("docs", np.ones(DIM, np.float32), 3))[0].ids == []


async def test_of_two_concurrent_creates_of_one_name_on_two_routers_exactly_one_wins(cluster, etcd, etcd_root):
    other = RouterServer(RouterConfig(etcd_endpoints=(etcd.endpoint,), etcd_root=etcd_root, port=0))
    await other.start()
    try:
        async with AsyncClient(other.address) as second:
            outcomes = await asyncio.gather(
                cluster.client.create_collection("race", DIM, index="flat", shards=3),
                second.create_collection("race", 2 * DIM, index="flat", shards=2),
                return_exceptions=True,
            )
            winners = [o for o in outcomes if not isinstance(o, BaseException)]
            assert len(winners) == 1 and sum(isinstance(o, AlreadyExists) for o in outcomes) == 1, outcomes
            dim, shards = winners[0].spec.dim, winners[0].spec.shards
            record = await cluster.store.get_collection("race")
            assert (record.dim, record.shards) == (dim, shards)
            assert sorted(s for held in partitions(cluster, "race") for s in held) == list(range(shards))
            assert {p.spec.dim for f in cluster.fakes for p in f.partitions.values()} == {dim}
            vectors = unit_rows(np.random.default_rng(0), 20, dim)
            await assert_eventually_async(lambda: serving(other, "race"))  # the loser's router learns from etcd
            for client in (cluster.client, second):
                await client.upsert("race", [f"p{i}" for i in range(20)], vectors)
                assert (await client.search("race", vectors[7], 1))[0].ids == ["p7"]
    finally:
        await other.stop(0)


def lagging_watch(router: RouterServer, lag_s: float) -> None:
    """Make `router`'s watcher read each new snapshot `lag_s` late, as a router on a slow link to etcd would."""
    read = router.store.snapshot

    async def late_snapshot():  # type: ignore[no-untyped-def]
        await asyncio.sleep(lag_s)
        return await read()

    router.store.snapshot = late_snapshot  # type: ignore[method-assign]


async def test_a_collection_created_through_one_router_is_served_at_once_by_another_whose_watch_lags(cluster, etcd, etcd_root):
    other = RouterServer(RouterConfig(etcd_endpoints=(etcd.endpoint,), etcd_root=etcd_root, port=0))
    await other.start()
    lagging_watch(other, 0.3)
    try:
        async with AsyncClient(other.address) as second:
            await cluster.client.create_collection("fresh", DIM, index="flat", shards=2)
            assert "fresh" not in other.watcher.current.collections  # its snapshot is behind etcd
            vectors = unit_rows(np.random.default_rng(1), 10, DIM)
            assert await second.upsert("fresh", [f"p{i}" for i in range(10)], vectors) == 10
            assert (await second.search("fresh", vectors[3], 1))[0].ids == ["p3"]
            await cluster.client.set_alias("latest", "fresh")
            assert (await second.search("latest", vectors[4], 1))[0].ids == ["p4"]
    finally:
        await other.stop(0)


async def test_misses_for_a_missing_collection_still_answer_not_found_and_read_etcd_one_at_a_time(cluster):
    read = cluster.router.store.last_change_revision
    reads = {"now": 0, "most": 0, "all": 0}

    async def counted() -> int:
        reads["now"] += 1
        reads["all"] += 1
        reads["most"] = max(reads["most"], reads["now"])
        try:
            await asyncio.sleep(0.02)
            return await read()
        finally:
            reads["now"] -= 1

    cluster.router.servicer._catch_up._read_revision = counted
    outcomes = await asyncio.gather(
        *(cluster.client.search("nope", np.ones(DIM, np.float32), 1) for _ in range(40)), return_exceptions=True,
    )
    assert all(isinstance(o, NotFound) and "'nope' does not exist" in str(o) for o in outcomes), outcomes
    assert reads["most"] == 1 and 1 <= reads["all"] <= 20, reads


async def test_a_miss_does_not_wait_for_writes_outside_the_root_that_no_snapshot_of_it_reaches(cluster, etcd_root):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=1)
    await cluster.store.client.put(etcd_root[:-1] + "~elsewhere/progress", b"{}")  # bumps etcd's revision only
    catch_up = SnapshotCatchUp(cluster.router.watcher, cluster.store.last_change_revision, max_wait_s=60.0)
    # Nothing under the root is newer than the snapshot: no wait at all (a hang here would last 60 s).
    assert await asyncio.wait_for(catch_up.catch_up(), 10.0) is False
    with pytest.raises(NotFound):
        await cluster.client.search("nope", np.ones(DIM, np.float32), 1, timeout=5.0)


async def test_a_record_the_router_cannot_read_is_skipped_and_reported_while_the_rest_is_served(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    bad_key = cluster.store.keys.collection("from-the-future")
    await cluster.store.client.put(bad_key, b'{"schema": 2, "name": "from-the-future"}')
    await cluster.client.create_collection("after", DIM, index="flat", shards=1)  # the watcher goes on

    async def reported() -> None:
        status = await cluster.client.status()
        assert [(key, "schema 2" in reason) for key, reason in status.skipped_records.items()] == [(bad_key, True)]
        assert {c.spec.name for c in status.collections} == {"docs", "after"}

    await assert_eventually_async(reported)
    await cluster.client.upsert("docs", ["a"], unit_rows(np.random.default_rng(0), 1, DIM))


async def test_a_create_whose_name_was_dropped_and_made_again_meanwhile_fails_and_leaves_the_new_one_alone(cluster):
    for fake in cluster.fakes:
        fake.freeze("CreatePartition")
    slow = asyncio.create_task(cluster.client.create_collection("docs", DIM, index="flat", shards=3))
    await assert_eventually_async(lambda: all(fake.requests("CreatePartition") for fake in cluster.fakes))
    # Meanwhile another router drops the claimed name and makes a collection of it with another dim.
    claimed = await cluster.store.get_collection("docs")
    claim_map = await cluster.store.get_shard_map("docs", 1)
    await cluster.store.drop_collection("docs")
    await cluster.store.create_collection(dataclasses.replace(claimed, dim=2 * DIM), claim_map)
    for fake in cluster.fakes:
        fake.release("CreatePartition")
    with pytest.raises(ERRORS_BY_CODE[grpc.StatusCode.ABORTED], match="dropped or changed"):
        await slow
    assert (await cluster.store.get_collection("docs")).dim == 2 * DIM
    assert await cluster.store.get_shard_map("docs", 1) == claim_map  # still the other one's claim, untouched


async def test_a_claim_left_by_a_router_that_died_mid_create_is_taken_over_and_a_fresh_one_is_not(cluster):
    servers = sorted(s.server_id for s in await cluster.store.list_servers())
    for name, age in (("abandoned", 10_000.0), ("in-progress", 0.0)):
        record = CollectionRecord(name, DIM, "cosine", "flat", {}, 3, 1, "", 1, None, time.time() - age)
        await cluster.store.create_collection(record, place_shards(name, 3, 1, servers, "creating"))
    info = await cluster.client.create_collection("abandoned", DIM, index="flat", shards=3)
    assert info.spec.name == "abandoned"
    await cluster.client.upsert("abandoned", ["a"], unit_rows(np.random.default_rng(0), 1, DIM))
    with pytest.raises(AlreadyExists):
        await cluster.client.create_collection("in-progress", DIM, index="flat", shards=3)


async def test_a_create_ends_at_the_callers_deadline_and_rolls_back_instead_of_waiting_on_a_frozen_server(cluster):
    cluster.fakes[1].freeze("CreatePartition")
    # The router answers before the caller's deadline, saying which step did not finish in time.
    with pytest.raises(Unavailable, match="creating the partitions of 'docs': 1 of 3 shards did not answer"):
        await cluster.client_with_deadline(2.0).create_collection("docs", DIM, index="flat", shards=3)
    # The router gave up with its caller (not after the shard call's own 30 s): the claim is rolled back and
    # the name is free while the server is still frozen.
    await assert_eventually_async(lambda: _gone(cluster, "docs"), timeout=10)
    cluster.fakes[1].heal()
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    assert partitions(cluster, "docs") == [[0], [1], [2]]


async def _gone(cluster: FakeCluster, name: str) -> bool:
    try:
        await cluster.store.get_collection(name)
    except NotFound:
        return True
    return False


async def deregister(cluster: FakeCluster, n: int) -> None:
    """Fake n leaves etcd's server list (its lease revoked), as a server that is gone for good does."""
    cluster.registrations[n].closed_by_test = True
    await cluster.registrations[n].close()
    await assert_eventually_async(lambda: f"fake-{n}" not in cluster.router.watcher.current.servers)


async def test_a_drop_skips_only_the_replicas_of_a_server_gone_from_etcd(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3, replication_factor=2)
    assert partitions(cluster, "docs") == [[0, 2], [0, 1], [1, 2]]
    await deregister(cluster, 0)
    await cluster.client.drop_collection("docs")
    await assert_gone_from_etcd(cluster, "docs")
    # fake-0 was first in shard 0's and second in shard 2's replica list: every other replica is dropped.
    assert partitions(cluster, "docs") == [[0, 2], [], []]


async def test_cluster_status_names_every_server_and_replica_with_its_state_points_and_address(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    await cluster.client.upsert("docs", [f"p{i}" for i in range(30)], unit_rows(np.random.default_rng(0), 30, DIM))
    status = await cluster.stub.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=10)
    assert [(s.server_id, s.address) for s in status.servers] == [(f"fake-{n}", f.address) for n, f in enumerate(cluster.fakes)]
    assert [c.spec.name for c in status.collections] == ["docs"]
    counts = [len(cluster.fakes[n].point_ids("docs", n)) for n in range(3)]
    assert sum(counts) == 30
    assert [(r.collection, r.version, r.shard, r.server_id, r.address, r.state, r.point_count, r.trained) for r in status.replicas] == [
        ("docs", 1, n, f"fake-{n}", cluster.fakes[n].address, "serving", counts[n], True) for n in range(3)
    ]

    await cluster.fakes[1].stop()  # registered still, but not answering
    await deregister(cluster, 2)  # gone from etcd
    status = await cluster.stub.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=10)
    assert [s.server_id for s in status.servers] == ["fake-0", "fake-1"]
    assert [(r.server_id, r.address, r.state, r.point_count, r.trained) for r in status.replicas] == [
        ("fake-0", cluster.fakes[0].address, "serving", counts[0], True),
        ("fake-1", cluster.fakes[1].address, "unreachable", 0, False),
        ("fake-2", "", "unreachable", 0, False),
    ]


async def test_cluster_status_reports_a_frozen_server_unreachable_instead_of_waiting_for_it(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    cluster.fakes[0].freeze("Stats")
    status = await cluster.stub.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=10)  # status_timeout_s is 2
    assert [(r.server_id, r.state) for r in status.replicas] == [("fake-0", "unreachable"), ("fake-1", "serving"), ("fake-2", "serving")]


async def test_dropping_one_collection_leaves_another_ones_partitions_and_points(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", shards=3)
    await cluster.client.create_collection("other", DIM, index="flat", shards=3)
    vectors = unit_rows(np.random.default_rng(5), 12, DIM)
    await cluster.client.upsert("other", [f"o{i}" for i in range(12)], vectors)
    await cluster.client.drop_collection("docs")
    await assert_gone_from_etcd(cluster, "docs")
    assert partitions(cluster, "docs") == [[], [], []]
    assert partitions(cluster, "other") == [[0], [1], [2]]
    assert len(await cluster.client.get("other", [f"o{i}" for i in range(12)])) == 12
    with pytest.raises(NotFound):
        await cluster.client.drop_collection("docs")  # gone: a second drop says so


async def test_describe_and_list_return_the_whole_definition_the_create_gave(cluster):
    await cluster.client.create_collection(
        "full", DIM, metric="l2", index="hnsw", index_params={"m": 8, "ef_search": 40}, shards=2, replication_factor=2, model="m-7"
    )
    for info in [await cluster.client.describe_collection("full"), *(await cluster.client.list_collections())]:
        spec = info.spec
        assert (spec.name, spec.dim, spec.metric, spec.index, spec.shards, spec.replication_factor, spec.model) == (
            "full", DIM, "l2", "hnsw", 2, 2, "m-7")
        assert spec.index_params["m"] == 8 and spec.index_params["ef_search"] == 40
    # ... and every partition on the shards was made with that definition.
    specs = [p.spec for fake in cluster.fakes for p in fake.partitions.values()]
    assert len(specs) == 4  # 2 shards x 2 replicas
    assert {(s.dim, s.metric, s.index.hnsw.m, s.model) for s in specs} == {(DIM, specs[0].metric, 8, "m-7")}
    from quiver.wire.specs import metric_from_proto

    assert metric_from_proto(specs[0].metric) == "l2"


async def test_admin_calls_without_any_deadline_are_served(cluster):
    from quiver.client import collection_spec

    spec = collection_spec("nodeadline", DIM, index="flat", shards=3)
    created = await cluster.stub.CreateCollection(router_pb2.CreateCollectionRequest(spec=spec))  # no timeout at all
    assert created.collection.spec.name == "nodeadline"
    await cluster.stub.DropCollection(router_pb2.DropCollectionRequest(name="nodeadline"))
    await assert_gone_from_etcd(cluster, "nodeadline")
