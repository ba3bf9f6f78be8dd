"""Index versions through the router, over fake shards: listing, the point-count check before cutover, a
search naming the version that answered it, rollback to the same answers, and retiring a version.

Version 2 is made here by hand, as a finished build would leave it (same placement, every point copied),
since what is under test is the router's handling of versions, not the build. It names no `built_from`: a
version built from the active one by a reindex is cut over only through the router whose build keeps it up
to date (tests/integration/test_reindex.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quiver.control_plane import versions
from quiver.control_plane.records import VersionSpec
from quiver.errors import FailedPrecondition
from quiver.v1 import shard_pb2
from tests.eventually import assert_eventually_async as eventually
from tests.fake_shard import FakeCluster, FakePartition, fake_cluster

DIM = 8
N = 60


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        await running.client.create_collection("docs", DIM, index="flat", shards=3, replication_factor=2)
        vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
        await running.client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
        yield running


async def build_v2(cluster: FakeCluster, copied: int = N) -> None:
    """v2 beside v1: same placement, a different spec, holding the first `copied` points of each partition's
    copy (all of them: a complete build)."""
    v1 = await cluster.store.get_shard_map("docs", 1)
    spec = VersionSpec("flat", {}, "model-b", 2)
    await versions.add_version(cluster.store, dataclasses.replace(v1, version=2, spec=spec, state="building"))
    left = copied
    for fake in cluster.fakes:
        for (collection, shard, version), partition in list(fake.partitions.items()):
            if (collection, version) != ("docs", 1):
                continue
            ref = shard_pb2.PartitionRef(collection="docs", shard=shard, version=2)
            spec_v2 = shard_pb2.PartitionSpec()
            spec_v2.CopyFrom(partition.spec)
            spec_v2.ref.CopyFrom(ref)
            fake.partitions[("docs", shard, 2)] = FakePartition(spec_v2, dict(partition.points))
    if copied < N:  # an unfinished build: points missing from the primaries of v2
        for fake in cluster.fakes:
            for key in [k for k in fake.partitions if k[0] == "docs" and k[2] == 2]:
                points = fake.partitions[key].points
                for point_id in sorted(points)[: max(len(points) - left, 0)]:
                    del points[point_id]
    await versions.set_state(cluster.store, "docs", 2, "ready")


async def test_versions_lists_every_version_with_its_state_spec_and_point_count(cluster):
    await build_v2(cluster)
    reply = await cluster.client.versions("docs")
    assert (reply.active, reply.previous) == (1, 0)
    assert [(v.version, v.state, v.shards, v.point_count) for v in reply.versions] == [(1, "active", 3, N), (2, "ready", 3, N)]
    assert (reply.versions[1].model, reply.versions[1].replication_factor, reply.versions[1].built_from) == ("model-b", 2, 0)
    assert reply.versions[0].index.WhichOneof("kind") == "flat"


async def test_cutover_is_refused_while_the_new_version_holds_fewer_points_unless_forced(cluster):
    await build_v2(cluster, copied=0)
    with pytest.raises(FailedPrecondition, match=r"to v2 refused: it holds \d+ points, the active v1 holds 60"):
        await cluster.client.cutover("docs")
    assert (await cluster.client.versions("docs")).active == 1
    assert await cluster.client.cutover("docs", force=True) == (2, 1)


async def test_after_cutover_searches_are_answered_by_the_new_version_and_rollback_restores_the_same_answers(cluster):
    queries = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    before = await cluster.client.search("docs", queries, 5)
    assert {r.version for r in before} == {1}
    await build_v2(cluster)
    with pytest.raises(FailedPrecondition, match="the active version is v1, not v2"):
        await cluster.client.cutover("docs", expected_active=2)
    assert await cluster.client.cutover("docs", expected_active=1) == (2, 1)
    cluster.clear_logs()
    after = await cluster.client.search("docs", queries, 5)
    assert {r.version for r in after} == {2}
    asked = {r.ref.version for fake in cluster.fakes for method, r in fake.log if method == "Search"}
    assert asked == {2}  # every shard asked was of v2: no answer mixes versions
    with pytest.raises(FailedPrecondition, match="no follow in this router kept it up to date"):
        await cluster.client.rollback("docs", expected_active=2)  # v2 was made by hand: nothing followed it back into v1
    assert await cluster.client.rollback("docs", expected_active=2, force=True) == (1, 0)
    back = await cluster.client.search("docs", queries, 5)
    assert [r.ids for r in back] == [r.ids for r in before] and {r.version for r in back} == {1}


async def test_retiring_a_version_frees_its_partitions_on_the_servers_and_the_active_one_cannot_be_retired(cluster):
    await build_v2(cluster)
    with pytest.raises(FailedPrecondition, match="v1 is active; it cannot become retired"):
        await cluster.client.retire("docs", 1)
    await cluster.client.retire("docs", 2)
    assert [(v.version, v.state) for v in (await cluster.client.versions("docs")).versions] == [(1, "active"), (2, "retired")]

    async def freed() -> None:
        assert not [k for fake in cluster.fakes for k in fake.partitions if k[2] == 2]

    await eventually(freed)
    assert len(await cluster.client.search("docs", np.ones(DIM, dtype=np.float32), 5)) == 1
