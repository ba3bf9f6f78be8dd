"""The rolling reindex through a real router, real shard servers (in-process, gRPC on loopback) and a real
etcd, under a steady write and search load: v+1 is built from v's points and v's log while v serves, the
cutover seals v and replays its last writes first, and afterwards v+1 holds exactly what v's acknowledged
writes left (checked by id, vector and metadata), with no failed write or search on the way and every
search answered by one version."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from quiver.client import AsyncClient, Client
from quiver.errors import FailedPrecondition, NotFound
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2
from quiver.verification import check_thresholds, verify_version
from tests.data_fixtures import glove_subset
from tests.integration.test_replication import Cluster, cluster  # noqa: F401  (the fixture)

BASE = 2000
WRITERS = 6


@dataclass
class Load:
    """A writer and a searcher through the router; the writer keeps what its acknowledged writes left."""

    client: AsyncClient
    vectors: np.ndarray
    expected: dict[str, tuple[np.ndarray, dict] | None] = field(default_factory=dict)  # None: deleted
    write_errors: list[str] = field(default_factory=list)
    search_errors: list[str] = field(default_factory=list)
    versions_seen: list[int] = field(default_factory=list)
    stopped: bool = False

    async def write(self, writer: int, writers: int) -> None:
        """Writer `writer` of `writers` touches only ids no other writer does, so the ledger stays exact."""
        i = writer
        while not self.stopped:
            i += writers
            fresh = BASE + i % (len(self.vectors) - BASE)
            try:
                if i % 7 == 0:
                    victim = f"p{(i * 13) % BASE // writers * writers + writer}"
                    await self.client.delete("docs", [victim], timeout=5)
                    self.expected[victim] = None
                else:
                    point_id = f"p{(i * 31) % BASE // writers * writers + writer}" if i % 3 == 0 else f"w{i}"
                    metadata = {"i": i}
                    await self.client.upsert("docs", [point_id], self.vectors[fresh:fresh + 1], [metadata], timeout=5)
                    self.expected[point_id] = (self.vectors[fresh], metadata)
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                self.write_errors.append(repr(error))

    async def search(self, queries: np.ndarray) -> None:
        n = 0
        while not self.stopped:
            n += 1
            try:
                [result] = await self.client.search("docs", queries[n % len(queries)], k=10, timeout=5)
                self.versions_seen.append(result.version)
            except Exception as error:  # noqa: BLE001
                self.search_errors.append(repr(error))
            await asyncio.sleep(0.005)


async def load_collection(cluster: Cluster, index: str, params: dict, shards: int) -> tuple[Load, np.ndarray]:
    data = glove_subset()
    vectors = data.base[:BASE + 3000]
    await cluster.client.create_collection("docs", vectors.shape[1], index=index, index_params=params, shards=shards, replication_factor=2)
    await cluster.client.upsert("docs", [f"p{i}" for i in range(BASE)], vectors[:BASE], [{"i": -1}] * BASE)
    load = Load(cluster.client, vectors)
    for i in range(BASE):
        load.expected[f"p{i}"] = (vectors[i], {"i": -1})
    return load, data.queries


async def wait_for_state(client: AsyncClient, state: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        [build] = await client.reindex_status("docs")
        assert build.state != "failed", build.failure
        if build.state == state:
            return build
        await asyncio.sleep(0.05)
    raise AssertionError(f"the build did not become {state}: {build}")


async def check_holds_what_was_acknowledged(client: AsyncClient, load: Load) -> None:
    ids = list(load.expected)
    found = {}
    for start in range(0, len(ids), 500):
        for point in await client.get("docs", ids[start:start + 500], include_vectors=True):
            found[point.id] = point
    missing = [i for i, e in load.expected.items() if e is not None and i not in found]
    zombies = [i for i, e in load.expected.items() if e is None and i in found]
    assert not missing and not zombies, f"{len(missing)} acknowledged points missing ({missing[:5]}), {len(zombies)} deleted ones back ({zombies[:5]})"
    wrong = []
    for point_id, entry in load.expected.items():
        if entry is None:
            continue
        vector, metadata = entry
        point = found[point_id]
        unit = vector / np.linalg.norm(vector)
        if point.metadata != metadata or not np.allclose(point.vector, unit, atol=1e-5):
            wrong.append(point_id)
    assert not wrong, f"{len(wrong)} points hold an older write: {wrong[:5]}"


@pytest.mark.parametrize(
    "index, params, shards, new_index, new_params, new_shards",
    [
        ("hnsw", {"M": 16}, 2, "hnsw", {"M": 8, "ef_construction": 64}, 3),  # a parameter change and a reshard 2 -> 3
        ("hnsw", {}, 2, "ivf_pq", {"nlist": 16, "m": 10, "train_size": 1000, "refine": 4}, 2),  # HNSW -> IVF-PQ
    ],
    ids=["hnsw-params-reshard-2-to-3", "hnsw-to-ivf-pq"],
)
async def test_a_reindex_under_load_cuts_over_with_every_acknowledged_write_and_no_failed_request(
    cluster, index, params, shards, new_index, new_params, new_shards,  # noqa: F811
):
    load, queries = await load_collection(cluster, index, params, shards)
    # Writers back to back, so writes are in flight whenever the cutover seals v1 and switches.
    tasks = [asyncio.ensure_future(load.write(n, WRITERS)) for n in range(WRITERS)] + [asyncio.ensure_future(load.search(queries))]
    try:
        await asyncio.sleep(0.3)
        started = await cluster.client.reindex("docs", index=new_index, index_params=new_params, shards=new_shards)
        assert (started.source_version, started.version, started.state) == (1, 2, "building")
        again = await cluster.client.reindex("docs", index=new_index, index_params=new_params, shards=new_shards)
        assert again.version == 2, "asking again while it builds must not start another build"
        built = await wait_for_state(cluster.client, "ready")
        assert sum(s.exported for s in built.shards) >= BASE - BASE // 7 and all(s.export_done for s in built.shards)
        await asyncio.sleep(0.3)  # v2 follows v1's writes for a while
        assert await cluster.client.cutover("docs", expected_active=1) == (2, 1)
        await asyncio.sleep(0.3)  # writes now go to v2
    finally:
        load.stopped = True
        await asyncio.gather(*tasks)
    assert not load.write_errors, load.write_errors[:5]
    assert not load.search_errors, load.search_errors[:5]
    assert set(load.versions_seen) == {1, 2}
    assert load.versions_seen == sorted(load.versions_seen), "a search answered by v1 after one answered by v2"
    listed = await cluster.client.versions("docs")
    by_version = {v.version: v for v in listed.versions}
    assert (by_version[2].state, by_version[2].shards, by_version[2].index.WhichOneof("kind")) == ("active", new_shards, new_index)
    assert by_version[1].state == "previous"
    await check_holds_what_was_acknowledged(cluster.client, load)
    assert by_version[2].point_count == sum(1 for e in load.expected.values() if e is not None)


async def test_a_build_whose_router_stopped_is_not_cut_over_and_a_new_reindex_replaces_it_then_rollback_restores_v1(cluster):  # noqa: F811
    load, queries = await load_collection(cluster, "hnsw", {}, 2)
    await cluster.client.reindex("docs", index="flat")
    await wait_for_state(cluster.client, "ready")
    await cluster.router.servicer.stop_builds()  # as if the router running it had died
    await cluster.client.upsert("docs", ["late"], load.vectors[-1:], [{"i": 0}])  # v2 no longer sees v1's writes
    load.expected["late"] = (load.vectors[-1], {"i": 0})
    with pytest.raises(FailedPrecondition, match="no build in this router keeps it up to date"):
        await cluster.client.cutover("docs", expected_active=1)
    replaced = await cluster.client.reindex("docs", index="flat")
    assert replaced.version == 3
    await wait_for_state(cluster.client, "ready")
    states = {v.version: v.state for v in (await cluster.client.versions("docs")).versions}
    assert states == {1: "active", 2: "retired", 3: "ready"}
    before = [[h.id for h in r.hits] for r in await cluster.client.search("docs", queries[:20], k=10)]
    assert await cluster.client.cutover("docs") == (3, 1)
    await check_holds_what_was_acknowledged(cluster.client, load)
    assert await cluster.client.rollback("docs", expected_active=3) == (1, 0)  # v3 is left ready, not previous
    after = await cluster.client.search("docs", queries[:20], k=10)
    assert {r.version for r in after} == {1}
    assert [[h.id for h in r.hits] for r in after] == before
    # v1 took writes again once rolled back to (the cutover's seal is lifted).
    await cluster.client.upsert("docs", ["after-rollback"], load.vectors[:1])
    assert [p.id for p in await cluster.client.get("docs", ["after-rollback"])] == ["after-rollback"]


async def test_verification_replays_queries_on_the_new_version_and_thresholds_refuse_a_worse_one(cluster):  # noqa: F811
    load, queries = await load_collection(cluster, "hnsw", {}, 2)
    await cluster.client.reindex("docs", index="hnsw", index_params={"M": 4, "ef_construction": 8, "ef_search": 10})
    await wait_for_state(cluster.client, "ready")
    with Client(cluster.router.address) as sync_client:
        result = await asyncio.to_thread(verify_version, sync_client, "docs", 2, queries[:40], 10)
    assert (result.version, result.active, result.queries) == (2, 1, 40)
    # Recall against exact search on v2 itself, computed here from the same router independently.
    exact = await cluster.client.search("docs", queries[:40], 10, exact=True, version=2)
    approx = await cluster.client.search("docs", queries[:40], 10, version=2)
    expected = np.mean([len({h.id for h in a.hits} & {h.id for h in e.hits}) / 10 for a, e in zip(approx, exact)])
    assert abs(result.recall - expected) < 0.05 and result.recall < 0.999, "a tiny ef should lose some neighbours"
    active = await cluster.client.search("docs", queries[:40], 10)
    overlap = np.mean([len({h.id for h in a.hits} & {h.id for h in b.hits}) / 10 for a, b in zip(approx, active)])
    assert result.overlap is not None and abs(result.overlap - overlap) < 0.05
    assert {r.version for r in approx} == {2} and {r.version for r in active} == {1}
    assert check_thresholds(result, result.recall - 0.01, result.overlap - 0.01) == []
    short = check_thresholds(result, result.recall + 0.01, None)
    assert len(short) == 1 and short[0].startswith("recall@10")
    assert result.p50_ms > 0 and result.active_p99_ms >= result.active_p50_ms


async def test_a_new_model_gets_a_version_of_its_own_and_requests_of_each_model_reach_the_version_holding_it(cluster):  # noqa: F811
    vectors = glove_subset().base[:400]
    await cluster.client.create_collection("docs", vectors.shape[1], index="flat", shards=2, replication_factor=2, model="m1")
    ids = [f"p{i}" for i in range(200)]
    await cluster.client.upsert("docs", ids, vectors[:200], model="m1")
    opened = await cluster.client.reindex("docs", model="m2")
    assert (opened.version, opened.state) == (2, "ready") and not opened.shards
    assert (await cluster.client.reindex("docs", model="m2")).version == 2, "asked again: the same version"
    await cluster.client.upsert("docs", ids[:100], vectors[200:300], model="m2")  # the new model's vectors, by its tag
    await cluster.client.upsert("docs", ids[100:], vectors[300:400], version=2)  # or by the version
    new = await cluster.client.search("docs", vectors[200], 1, model="m2")
    old = await cluster.client.search("docs", vectors[0], 1, model="m1")
    assert (new[0].version, new[0].hits[0].id) == (2, "p0") and (old[0].version, old[0].hits[0].id) == (1, "p0")
    with pytest.raises(FailedPrecondition, match=r"v2 holds embeddings of model 'm2', but the request uses 'm1'"):
        await cluster.client.upsert("docs", ids[:1], vectors[:1], model="m1", version=2)
    with pytest.raises(FailedPrecondition, match=r"v1 holds embeddings of model 'm1', but the request uses 'm3'"):
        await cluster.client.search("docs", vectors[0], 1, model="m3")
    counts = {v.version: v.point_count for v in (await cluster.client.versions("docs")).versions}
    assert counts == {1: 200, 2: 200}  # how many of v1's ids v2 holds
    assert await cluster.client.cutover("docs", expected_active=1) == (2, 1)
    after_new = await cluster.client.search("docs", vectors[200], 1, model="m2")
    after_old = await cluster.client.search("docs", vectors[0], 1, model="m1")  # v1, now previous, still answers m1
    assert after_new[0].version == 2 and (after_old[0].version, after_old[0].hits[0].id) == (1, "p0")
    with pytest.raises(FailedPrecondition, match="previous version; writes go to the active v2"):
        await cluster.client.upsert("docs", ids[:1], vectors[:1], model="m1")


async def test_writes_pinned_to_a_version_a_reindex_builds_are_refused(cluster):  # noqa: F811
    load, _ = await load_collection(cluster, "flat", {}, 1)
    await cluster.client.reindex("docs", index="hnsw")
    with pytest.raises(FailedPrecondition, match="built from v1 by a reindex"):
        await cluster.client.upsert("docs", ["x"], load.vectors[:1], version=2)
    with pytest.raises(NotFound, match="has no version 7"):
        await cluster.client.search("docs", load.vectors[0], 1, version=7)


async def test_a_build_whose_source_primary_dies_fails_with_the_reason_v1_serves_on_and_a_rerun_finishes(cluster):  # noqa: F811
    load, queries = await load_collection(cluster, "hnsw", {}, 1)  # shard 0 on s0 (primary) and s1
    await cluster.client.reindex("docs", index="flat")
    await wait_for_state(cluster.client, "ready")
    await cluster.stop_shard("s0")  # v1's primary: the controller promotes s1 in a new term
    started = time.monotonic()
    while time.monotonic() - started < 60:
        [build] = await cluster.client.reindex_status("docs")
        if build.state == "failed":
            break
        await asyncio.sleep(0.1)
    assert build.state == "failed" and "changed primary during the build" in build.failure, build
    states = {v.version: (v.state, v.failure) for v in (await cluster.client.versions("docs")).versions}
    assert states[1][0] == "active" and states[2] == ("failed", build.failure)
    assert len(await cluster.client.search("docs", queries[0], 10)) == 1  # v1 answers throughout
    await cluster.client.upsert("docs", ["after"], load.vectors[-1:], [{"i": 1}])  # through v1's new primary
    load.expected["after"] = (load.vectors[-1], {"i": 1})
    await cluster.start_shard("s0")
    rerun = await cluster.client.reindex("docs", index="flat")
    assert rerun.version == 3
    await wait_for_state(cluster.client, "ready")
    assert {v.version: v.state for v in (await cluster.client.versions("docs")).versions} == {1: "active", 2: "retired", 3: "ready"}
    assert await cluster.client.cutover("docs") == (3, 1)
    await check_holds_what_was_acknowledged(cluster.client, load)


async def test_after_a_cutover_the_old_version_follows_the_new_one_so_rollback_and_a_second_cutover_lose_no_write(cluster):  # noqa: F811
    load, queries = await load_collection(cluster, "hnsw", {}, 2)
    tasks = [asyncio.ensure_future(load.write(n, WRITERS)) for n in range(WRITERS)] + [asyncio.ensure_future(load.search(queries))]
    try:
        await cluster.client.reindex("docs", index="flat", shards=3)
        await wait_for_state(cluster.client, "ready")
        assert await cluster.client.cutover("docs", expected_active=1) == (2, 1)
        await asyncio.sleep(0.5)  # writes reach v2, and are followed back into v1
        [back] = await cluster.client.reindex_status("docs")
        assert (back.source_version, back.version, back.state) == (2, 1, "following")
        assert await cluster.client.rollback("docs", expected_active=2) == (1, 0)
        await asyncio.sleep(0.5)
        [forth] = await cluster.client.reindex_status("docs")
        assert (forth.source_version, forth.version, forth.state) == (1, 2, "following")
        assert await cluster.client.cutover("docs", expected_active=1) == (2, 1)
        await asyncio.sleep(0.3)
    finally:
        load.stopped = True
        await asyncio.gather(*tasks)
    assert not load.write_errors, load.write_errors[:5]
    assert not load.search_errors, load.search_errors[:5]
    await check_holds_what_was_acknowledged(cluster.client, load)  # v2, active again
    assert await cluster.client.rollback("docs", expected_active=2) == (1, 0)
    await check_holds_what_was_acknowledged(cluster.client, load)  # and v1 holds the same


async def test_a_write_refused_by_a_seal_is_resent_and_succeeds_once_the_seal_is_lifted_without_a_switch(cluster):  # noqa: F811
    """As when a cutover fails after sealing (its seal is lifted again): the router resends within the deadline."""
    load, _ = await load_collection(cluster, "flat", {}, 1)
    primary = (await cluster.placement("docs")).primary
    ref = shard_pb2.PartitionRef(collection="docs", shard=0, version=1)
    stub = cluster.stub(primary)
    await stub.SealWrites(shard_pb2.SealWritesRequest(ref=ref, sealed=True, reason="a cutover that will fail"))
    # A channel without gRPC's retries: what is under test is the router resending, not the client.
    async with grpc.aio.insecure_channel(cluster.router.address, options=[("grpc.enable_retries", 0)]) as channel:
        request = router_pb2.RouterUpsertRequest(collection="docs", ids=["during-seal"], vectors=load.vectors[:1].tobytes())
        writing = asyncio.ensure_future(router_pb2_grpc.RouterStub(channel).Upsert(request, timeout=5))
        await asyncio.sleep(0.3)
        assert not writing.done(), "the write was answered while the only version was sealed"
        await stub.SealWrites(shard_pb2.SealWritesRequest(ref=ref, sealed=False))
        assert (await asyncio.wait_for(writing, 5)).upserted == 1
    assert [p.id for p in await cluster.client.get("docs", ["during-seal"])] == ["during-seal"]


async def test_a_keyed_collection_resharded_by_a_reindex_keeps_every_keys_points_together_on_the_keys_new_shard(cluster):  # noqa: F811
    vectors = glove_subset().base[:300]
    await cluster.client.create_collection("docs", vectors.shape[1], index="flat", shards=1, partition_key_field="tenant")
    for n, tenant in enumerate(("acme", "globex", "initech")):
        await cluster.client.upsert("docs", [f"d{i}" for i in range(100)], vectors[n * 100:(n + 1) * 100], partition_key=tenant)
    await cluster.client.reindex("docs", shards=3)
    await wait_for_state(cluster.client, "ready")
    assert await cluster.client.cutover("docs") == (2, 1)
    for n, tenant in enumerate(("acme", "globex", "initech")):
        got = await cluster.client.get("docs", ["d7"], include_vectors=True, partition_key=tenant)
        assert [p.id for p in got] == ["d7"] and np.allclose(got[0].vector, vectors[n * 100 + 7] / np.linalg.norm(vectors[n * 100 + 7]), atol=1e-5)
        [result] = await cluster.client.search("docs", vectors[n * 100 + 7], 100, partition_key=tenant)
        assert result.version == 2 and len(result.hits) == 100  # the whole key on the one shard asked


async def test_a_second_reindex_with_other_settings_is_refused_while_one_builds_and_the_same_one_attaches(cluster):  # noqa: F811
    await load_collection(cluster, "flat", {}, 1)
    first = await cluster.client.reindex("docs", index="hnsw", shards=2)
    with pytest.raises(FailedPrecondition, match=r"v2 is being built with other settings \(3 shards instead of 2\)"):
        await cluster.client.reindex("docs", index="hnsw", shards=3)
    with pytest.raises(FailedPrecondition, match="a new model gets a version of its own"):
        await cluster.client.reindex("docs", model="other")
    assert (await cluster.client.reindex("docs", index="hnsw", shards=2)).version == first.version == 2


async def test_every_router_shows_a_build_another_router_runs_and_a_reindex_asked_there_attaches_instead_of_replacing_it(cluster):  # noqa: F811
    from router.config import RouterConfig
    from router.server import RouterServer

    await load_collection(cluster, "hnsw", {}, 2)
    other = RouterServer(RouterConfig(etcd_endpoints=(cluster.etcd_endpoint,), etcd_root=cluster.root, controller=False))
    await other.start()
    # Routers behind one Service can share a display name (0.0.0.0:7000): their records are told apart anyway.
    other.servicer.identify(cluster.router.address)
    try:
        async with AsyncClient(other.address, timeout=10.0) as elsewhere:
            started = await cluster.client.reindex("docs", index="flat")
            builder = cluster.router.address
            assert started.reported_by == builder
            seen: list[router_pb2.ReindexProgress] = []
            for _ in range(100):  # published every couple of seconds
                seen = await elsewhere.reindex_status("docs")
                if seen and sum(s.total for s in seen[0].shards) == BASE:
                    break
                await asyncio.sleep(0.1)
            assert [(b.version, b.source_version, b.reported_by) for b in seen] == [(2, 1, builder)]
            assert sum(s.total for s in seen[0].shards) == BASE
            status = await elsewhere.status()
            assert [(b.collection, b.version, b.reported_by) for b in status.reindexes] == [("docs", 2, builder)]
            # Asked of the other router, the same reindex answers the running build; it does not retire it.
            attached = await elsewhere.reindex("docs", index="flat")
            assert (attached.version, attached.reported_by) == (2, builder)
            with pytest.raises(FailedPrecondition, match=f"being built by router {builder}"):
                await elsewhere.reindex("docs", index="hnsw", index_params={"m": 8})
            await wait_for_state(cluster.client, "ready")
            states = {v.version: v.state for v in (await elsewhere.versions("docs")).versions}
            assert states == {1: "active", 2: "ready"}
            # Once the builder stops, its record goes: no router shows a build nobody runs.
            await cluster.router.servicer.stop_builds()
            assert await elsewhere.reindex_status("docs") == []
    finally:
        await other.stop(0)


async def test_status_counts_how_many_of_the_active_versions_ids_a_new_models_version_holds(cluster):  # noqa: F811
    vectors = glove_subset().base[:500]
    await cluster.client.create_collection("docs", vectors.shape[1], index="flat", shards=2, replication_factor=1, model="m1")
    ids = [f"p{i}" for i in range(200)]
    await cluster.client.upsert("docs", ids, vectors[:200], model="m1")
    await cluster.client.reindex("docs", model="m2", shards=3)  # another shard count: the ids route differently
    # 120 of v1's ids re-embedded, and 30 ids v1 never had (new documents): held is 120, not v2's 150 points.
    await cluster.client.upsert("docs", ids[:120] + [f"new{i}" for i in range(30)], vectors[200:350], model="m2")
    coverage = None
    for _ in range(100):
        [coverage] = (await cluster.client.status()).model_coverage
        if coverage.counted_unix:
            break
        await asyncio.sleep(0.05)
    assert (coverage.collection, coverage.version, coverage.model, coverage.active_version) == ("docs", 2, "m2", 1)
    assert (coverage.held, coverage.active_points, coverage.error) == (120, 200, "")
    counts = {v.version: v.point_count for v in (await cluster.client.versions("docs")).versions}
    assert counts == {1: 200, 2: 150}
