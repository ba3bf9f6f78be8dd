"""The rolling reindex through a real router, real shard servers (in-process, gRPC on loopback) and a real
etcd, under a steady write and search load: v+1 is built from v's points and v's log while v serves, the
cutover seals v and replays its last writes first, and afterwards v+1 holds exactly what v's acknowledged
writes left (checked by id, vector and metadata), with no failed write or search on the way and every
search answered by one version."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from quiver.client import AsyncClient
from quiver.errors import FailedPrecondition
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
