"""Replication through real shard servers (in-process, real gRPC on loopback) registered in a real etcd,
with a real router in front: the primary orders writes and forwards them, an acknowledged write is on
every in-sync replica, a failed follower leaves the in-sync set by transaction before the write is
acknowledged and comes back by catching up from the primary's log, and terms fence a deposed primary.

Placement is round-robin over sorted server ids: shard 0 of a 1-shard collection has s0 as its primary.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from quiver.client import AsyncClient
from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.records import ShardPlacement
from quiver.control_plane.store import ClusterStore
from quiver.errors import Unavailable
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc
from router.config import RouterConfig
from router.server import RouterServer
from shard.config import ShardConfig
from shard.replication import ReplicationPolicy
from shard.server import ShardServer
from tests.eventually import assert_eventually_async as eventually

DIM = 8


@dataclass
class Cluster:
    tmp: Path
    etcd_endpoint: str
    root: str
    store: ClusterStore
    router: RouterServer
    client: AsyncClient
    shards: dict[str, ShardServer] = field(default_factory=dict)

    async def start_shard(self, server_id: str) -> ShardServer:
        server = ShardServer(ShardConfig(
            data_dir=self.tmp / server_id, etcd_endpoints=(self.etcd_endpoint,), etcd_root=self.root,
            server_id=server_id, lease_ttl_s=2.0, replication=ReplicationPolicy(ack_timeout_s=0.5, retry_s=0.1),
        ))
        await server.start()
        self.shards[server_id] = server
        return server

    async def stop_shard(self, server_id: str) -> None:
        await self.shards.pop(server_id).stop(grace=0.1)

    def stub(self, server_id: str) -> shard_pb2_grpc.ShardStub:
        return shard_pb2_grpc.ShardStub(grpc.aio.insecure_channel(self.shards[server_id].address))

    async def placement(self, collection: str, shard: int = 0) -> ShardPlacement:
        return (await self.store.get_shard_map(collection, 1)).shards[shard]


@pytest.fixture
async def cluster(etcd, etcd_root, tmp_path) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        etcd_client = stack.enter_context(contextlib.closing(EtcdClient([etcd.endpoint], timeout=5.0)))
        router = RouterServer(RouterConfig(etcd_endpoints=(etcd.endpoint,), etcd_root=etcd_root))
        running = Cluster(tmp_path, etcd.endpoint, etcd_root, ClusterStore(etcd_client, etcd_root), router, AsyncClient("127.0.0.1:1"))
        for n in range(3):
            await running.start_shard(f"s{n}")

        async def stop_shards() -> None:
            for server_id in list(running.shards):
                await running.stop_shard(server_id)

        stack.push_async_callback(stop_shards)
        await router.start()
        stack.push_async_callback(router.stop, 0)
        running.client = await stack.enter_async_context(AsyncClient(router.address, timeout=10.0))
        yield running


def ref(collection: str, shard: int = 0) -> shard_pb2.PartitionRef:
    return shard_pb2.PartitionRef(collection=collection, shard=shard, version=1)


async def contents(cluster: Cluster, server_id: str, collection: str, ids: list[str]) -> dict[str, tuple[bytes, str]]:
    """What one replica holds of `ids`, read from that server directly: id -> (vector bytes, metadata)."""
    reply = await cluster.stub(server_id).Get(shard_pb2.GetRequest(ref=ref(collection), ids=ids, include_vectors=True))
    return {p.id: (p.vector, str(p.metadata)) for p in reply.points}


async def digest(cluster: Cluster, server_id: str, collection: str) -> tuple[int, int]:
    reply = await cluster.stub(server_id).Digest(shard_pb2.DigestRequest(ref=ref(collection)))
    return reply.point_count, reply.digest


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


async def test_an_acknowledged_write_is_on_every_replica_and_status_shows_roles_terms_and_lag(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=3)
    ids = [f"p{i}" for i in range(40)]
    for start in range(0, 40, 10):  # several writes, each acknowledged only once all three hold it
        await cluster.client.upsert("docs", ids[start:start + 10], rows(40)[start:start + 10], [{"n": i} for i in range(start, start + 10)])
    assert await cluster.client.delete("docs", ids[:5]) == 5
    held = [await contents(cluster, s, "docs", ids) for s in ("s0", "s1", "s2")]
    assert sorted(held[0]) == sorted(ids[5:])
    assert held[0] == held[1] == held[2]
    digests = [await digest(cluster, s, "docs") for s in ("s0", "s1", "s2")]
    assert digests[0] == digests[1] == digests[2] and digests[0][0] == 35

    status = await cluster.client.status()
    replicas = {r.server_id: r for r in status.replicas if r.collection == "docs"}
    assert {s: r.role for s, r in replicas.items()} == {"s0": "primary", "s1": "in_sync", "s2": "in_sync"}
    assert {r.term for r in replicas.values()} == {1}
    assert {r.last_lsn for r in replicas.values()} == {5} and {r.lag for r in replicas.values()} == {0}
    await cluster.shards["s2"].registry.all()[0].delete(["p7"], None)  # behind the primary's back
    assert await digest(cluster, "s2", "docs") != digests[0]


async def test_a_dead_follower_is_dropped_from_the_in_sync_set_before_the_write_is_acknowledged(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=3)
    acks = sample("quiver_shard_replica_ack_seconds_count")
    await cluster.client.upsert("docs", ["a"], rows(1))
    assert sample("quiver_shard_replica_ack_seconds_count") == acks + 1  # the primary timed its followers' acks
    dropped = sample("quiver_shard_in_sync_changes_total", {"change": "dropped"})
    await cluster.stop_shard("s2")
    await cluster.client.upsert("docs", ["b", "c"], rows(2, 1))  # acknowledged: s0 and s1 hold it
    placement = await cluster.placement("docs")
    assert placement.in_sync_ids == ("s0", "s1") and placement.primary == "s0" and placement.term == 1
    assert sorted(await contents(cluster, "s1", "docs", ["a", "b", "c"])) == ["a", "b", "c"]
    assert sample("quiver_shard_in_sync_changes_total", {"change": "dropped"}) == dropped + 1


async def test_a_follower_back_from_a_restart_catches_up_from_the_log_and_rejoins_the_in_sync_set(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    ids = [f"p{i}" for i in range(30)]
    await cluster.client.upsert("docs", ids[:10], rows(10))
    await cluster.stop_shard("s1")
    for start in (10, 20):  # written while s1 is away: it misses them
        await cluster.client.upsert("docs", ids[start:start + 10], rows(10, start))
    await cluster.client.delete("docs", ids[:3])
    assert (await cluster.placement("docs")).in_sync_ids == ("s0",)

    await cluster.start_shard("s1")  # same data directory, new port

    async def rejoined() -> bool:
        return (await cluster.placement("docs")).in_sync_ids == ("s0", "s1")

    await eventually(rejoined, timeout=15)
    assert await contents(cluster, "s1", "docs", ids) == await contents(cluster, "s0", "docs", ids)
    assert len(await contents(cluster, "s1", "docs", ids)) == 27
    await cluster.client.upsert("docs", ["late"], rows(1, 99))  # and it takes part in writes again
    assert "late" in await contents(cluster, "s1", "docs", ["late"])


async def test_reads_never_go_to_a_replica_outside_the_in_sync_set(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    await cluster.client.upsert("docs", ["a"], rows(1))
    # As a controller would: s1 leaves the in-sync set (it is catching up, and may lack acknowledged writes).
    await cluster.store.update_placement("docs", 1, 0, lambda p: replace(p, in_sync=("s0",)))
    await eventually(lambda: cluster.router.watcher.current.shard_maps[("docs", 1)].shards[0].in_sync_ids == ("s0",), timeout=5)
    before = cluster.shards["s1"].registry.all()[0].searches_served
    for _ in range(20):
        assert [r.ids for r in await cluster.client.search("docs", rows(1), 1)] == [["a"]]
    assert cluster.shards["s1"].registry.all()[0].searches_served == before


async def test_with_min_in_sync_two_a_write_with_one_live_replica_is_refused_before_anything_is_applied(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2, min_in_sync=2)
    await cluster.client.upsert("docs", ["a"], rows(1))
    await cluster.stop_shard("s1")
    await eventually(lambda: "s1" not in cluster.router.watcher.current.servers, timeout=5)
    primary = cluster.shards["s0"].registry.all()[0]
    lsn = primary.last_lsn
    with pytest.raises(Unavailable, match="min_in_sync"):
        await cluster.client.upsert("docs", ["b"], rows(1, 1))
    assert primary.last_lsn == lsn  # nothing logged
    assert sorted(await contents(cluster, "s0", "docs", ["a", "b"])) == ["a"]


async def test_a_write_sent_to_a_server_that_is_not_the_primary_is_refused_and_names_the_primary(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub("s1").Upsert(shard_pb2.UpsertRequest(ref=ref("docs"), ids=["x"], vectors=rows(1).tobytes(), term=1))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the primary is s0" in refused.value.details()
    assert await contents(cluster, "s1", "docs", ["x"]) == {}


async def test_a_deposed_primary_cannot_acknowledge_a_write_once_a_newer_term_has_begun(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    await cluster.client.upsert("docs", ["a"], rows(1))
    # A new term with s1 as primary, as a controller's promotion writes it; s1 announces it to s0's partition.
    await cluster.store.update_placement("docs", 1, 0, lambda p: replace(p, primary="s1", term=2))
    await eventually(lambda: cluster.shards["s0"].registry.all()[0].term == 2, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # the old primary, asked with the old term
        await cluster.stub("s0").Upsert(shard_pb2.UpsertRequest(ref=ref("docs"), ids=["x"], vectors=rows(1).tobytes(), term=1))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as stale:  # a follower refuses records of the old term
        await cluster.stub("s1").Replicate(shard_pb2.ReplicateRequest(ref=ref("docs"), term=1, primary="s0"))
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await cluster.client.upsert("docs", ["b"], rows(1, 1))  # the new primary takes writes in term 2
    assert sorted(await contents(cluster, "s0", "docs", ["a", "b", "x"])) == ["a", "b"]


async def test_when_the_primary_dies_the_controller_promotes_an_in_sync_replica_and_writes_go_on(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=3)
    ids = [f"p{i}" for i in range(20)]
    await cluster.client.upsert("docs", ids[:10], rows(10))
    await cluster.stop_shard("s0")  # the primary

    async def promoted() -> bool:
        placement = await cluster.placement("docs")
        return placement.term == 2 and placement.primary in ("s1", "s2") and "s0" not in placement.in_sync_ids

    await eventually(promoted, timeout=10)
    await eventually(lambda: cluster.router.watcher.current.shard_maps[("docs", 1)].shards[0].term == 2, timeout=5)
    await cluster.client.upsert("docs", ids[10:], rows(10, 10))  # acknowledged by the new primary's group
    survivors = [await contents(cluster, s, "docs", ids) for s in ("s1", "s2")]
    assert sorted(survivors[0]) == sorted(ids) and survivors[0] == survivors[1]

    await cluster.start_shard("s0")  # the old primary returns, as a follower, and catches up

    async def rejoined() -> bool:
        return "s0" in (await cluster.placement("docs")).in_sync_ids

    await eventually(rejoined, timeout=15)
    assert await contents(cluster, "s0", "docs", ids) == survivors[0]
    assert cluster.router.controller is not None and cluster.router.controller.promotions == 1


async def test_a_returning_primarys_unacknowledged_tail_is_cut_off_and_it_converges_on_the_new_primary(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    await cluster.client.upsert("docs", ["a", "b"], rows(2))
    old_primary = cluster.shards["s0"].registry.all()[0]
    old_primary.on_logged = None  # as if s0 died right after logging this write, before forwarding it
    await old_primary.upsert(["ghost"], rows(1, 5), None, term=1)
    await cluster.stop_shard("s0")

    async def promoted() -> bool:
        return (await cluster.placement("docs")).primary == "s1"

    await eventually(promoted, timeout=10)
    await eventually(lambda: cluster.router.watcher.current.shard_maps[("docs", 1)].shards[0].primary == "s1", timeout=5)
    await cluster.client.upsert("docs", ["c"], rows(1, 6))  # lsn 2 in term 2: where s0 holds "ghost" in term 1
    await cluster.start_shard("s0")

    async def rejoined() -> bool:
        return "s0" in (await cluster.placement("docs")).in_sync_ids

    await eventually(rejoined, timeout=15)
    ids = ["a", "b", "c", "ghost"]
    assert sorted(await contents(cluster, "s0", "docs", ids)) == ["a", "b", "c"]
    assert await contents(cluster, "s0", "docs", ids) == await contents(cluster, "s1", "docs", ids)


async def test_a_follower_the_primarys_log_no_longer_reaches_back_to_gets_the_primarys_snapshot(cluster):
    await cluster.client.create_collection("docs", DIM, index="hnsw", replication_factor=2)
    ids = [f"p{i}" for i in range(60)]
    await cluster.client.upsert("docs", ids[:20], rows(20))
    await cluster.stop_shard("s1")
    primary = cluster.shards["s0"].registry.all()[0]
    for start in (20, 40):  # two snapshots while s1 is away: the log before the older one is dropped
        await cluster.client.upsert("docs", ids[start:start + 20], rows(20, start), [{"n": i} for i in range(start, start + 20)])
        await primary.snapshot()
    assert primary.first_logged_lsn > 2  # s1 stopped at lsn 1
    await cluster.start_shard("s1")

    async def rejoined() -> bool:
        return "s1" in (await cluster.placement("docs")).in_sync_ids

    await eventually(rejoined, timeout=20)
    assert await contents(cluster, "s1", "docs", ids) == await contents(cluster, "s0", "docs", ids)
    assert len(await contents(cluster, "s1", "docs", ids)) == 60
    # And it searches what it received: the primary's own HNSW graph, loaded from the snapshot's sections.
    reply = await cluster.stub("s1").Search(shard_pb2.SearchRequest(ref=ref("docs"), queries=rows(1, 40).tobytes(), k=1))
    assert list(reply.results[0].ids) == ["p40"]


async def test_a_drained_server_hands_its_replicas_to_another_server_without_losing_reads_or_writes(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    ids = [f"p{i}" for i in range(20)]
    await cluster.client.upsert("docs", ids[:10], rows(10))
    assert await cluster.client.drain("s0") == 1  # the primary of the shard's two replicas (s0, s1)

    async def drained() -> bool:
        placement = await cluster.placement("docs")
        return "s0" not in placement.server_ids and placement.in_sync_ids == placement.server_ids

    written = 10
    while not await drained():  # writes and reads go on throughout
        await cluster.client.upsert("docs", [ids[written % 20]], rows(1, written))
        assert len(await cluster.client.get("docs", ids[:10])) == 10
        written += 1
        assert written < 400, await cluster.placement("docs")
        await asyncio.sleep(0.02)
    placement = await cluster.placement("docs")
    assert sorted(placement.server_ids) == ["s1", "s2"] and placement.term == 2 and placement.primary == "s1"
    assert await contents(cluster, "s2", "docs", ids) == await contents(cluster, "s1", "docs", ids)
    status = await cluster.client.status()
    assert [s.draining for s in status.servers if s.server_id == "s0"] == [True]
    await eventually(lambda: cluster.shards["s0"].registry.all() == [], timeout=5)  # its partition is dropped


async def test_reads_that_reach_a_replica_which_no_longer_holds_the_partition_are_answered_by_another(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=3)
    ids = [f"p{i}" for i in range(10)]
    await cluster.client.upsert("docs", ids, rows(10))
    # As when a replica was moved off these servers a moment ago and this router's map has not caught up:
    # the map still lists all three replicas as in sync, but s1 and s2 hold nothing.
    for server_id in ("s1", "s2"):
        await cluster.stub(server_id).DropPartition(shard_pb2.DropPartitionRequest(ref=ref("docs")))
    assert cluster.router.watcher.current.shard_maps[("docs", 1)].shards[0].in_sync_ids == ("s0", "s1", "s2")
    router = router_pb2_grpc.RouterStub(grpc.aio.insecure_channel(cluster.router.address))  # no client retries
    for n in range(30):  # reads are spread over the replicas, so most of these reach s1 or s2 first
        got = await router.Get(router_pb2.RouterGetRequest(collection="docs", ids=ids), timeout=5)
        assert sorted(p.id for p in got.points) == sorted(ids)
        query = rows(10)[n % 10:n % 10 + 1].tobytes()
        found = await router.Search(router_pb2.RouterSearchRequest(collection="docs", queries=query, k=1), timeout=5)
        assert [list(r.ids) for r in found.results] == [[ids[n % 10]]]


async def test_a_write_that_reaches_a_primary_which_no_longer_holds_the_partition_is_unavailable_not_not_found(cluster):
    await cluster.client.create_collection("docs", DIM, index="flat", replication_factor=2)
    await cluster.client.upsert("docs", ["a"], rows(1))
    await cluster.stub("s0").DropPartition(shard_pb2.DropPartitionRequest(ref=ref("docs")))  # the primary, behind the map's back
    router = router_pb2_grpc.RouterStub(grpc.aio.insecure_channel(cluster.router.address))  # no client retries
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await router.Upsert(router_pb2.RouterUpsertRequest(collection="docs", ids=["b"], vectors=rows(1, 1).tobytes()), timeout=5)
    # Not the caller's mistake: retryable, and it says why.
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shard map was behind" in refused.value.details()


async def test_a_replica_whose_server_stays_gone_is_rebuilt_on_another_server(cluster):
    assert cluster.router.controller is not None
    cluster.router.controller.policy = replace(cluster.router.controller.policy, replace_after_s=0.5)
    await cluster.client.create_collection("docs", DIM, index="hnsw", replication_factor=2)
    ids = [f"p{i}" for i in range(30)]
    await cluster.client.upsert("docs", ids, rows(30))
    await cluster.stop_shard("s1")  # the follower, gone for good

    async def rebuilt() -> bool:
        placement = await cluster.placement("docs")
        return sorted(placement.server_ids) == ["s0", "s2"] and placement.in_sync_ids == placement.server_ids

    await eventually(rebuilt, timeout=20)
    assert await contents(cluster, "s2", "docs", ids) == await contents(cluster, "s0", "docs", ids)
    assert len(await contents(cluster, "s2", "docs", ids)) == 30
