"""The whole cluster as real processes: etcd, 3 shard servers and a router, started like `quiver up`.

Tests run in file order on one cluster: the read/write checks first, then the ones that break things
(a frozen shard, a killed shard, etcd stopped and restarted).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.datasets import exact_ground_truth, load_glove50, recall_at_k
from quiver.client import AsyncClient
from quiver.errors import AlreadyExists, FailedPrecondition, Unavailable
from quiver.filters import And, Eq, Filter, matches
from quiver.local_cluster import LocalCluster
from tests.eventually import assert_eventually_async
from shard.indexes import IndexConfig, QueryKnobs, create_index

N_BASE = 50_000
HNSW = {"m": 16, "ef_construction": 200, "ef_search": 64}
NODE_CLIENT = Path(__file__).parents[1] / "node_client"


def point_metadata(i: int) -> dict[str, object]:
    return {"group": i % 10, "rare": i % 200 == 0, "word_len": (i * 7) % 13}


@pytest.fixture(scope="module")
def data():
    return load_glove50(n_base=N_BASE, n_queries=500, gt_k=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), shards=3) as running:
        yield running


@pytest.fixture(scope="module")
async def loaded(cluster, data):
    async with AsyncClient(cluster.router_address, timeout=120) as client:
        await client.create_collection("glove", 50, index="hnsw", index_params=HNSW, shards=3, model="glove-6b-50d")
        ids = [f"w{i}" for i in range(N_BASE)]
        await client.upsert("glove", ids, data.base, [point_metadata(i) for i in range(N_BASE)], batch_size=5000)
    return cluster


async def search_rows(client: AsyncClient, queries: np.ndarray, k: int, **options) -> np.ndarray:
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), 100):
        for row, result in enumerate(await client.search("glove", queries[start : start + 100], k, **options)):
            found[start + row, : len(result.ids)] = [int(i[1:]) for i in result.ids]
    return found


async def test_router_recall_is_at_least_one_in_process_index_minus_a_hundredth(loaded, data):
    index = create_index(IndexConfig("hnsw", 50, "ip", HNSW))
    normed = data.base / np.linalg.norm(data.base, axis=1, keepdims=True)
    index.add(np.arange(N_BASE), normed)
    queries = data.queries / np.linalg.norm(data.queries, axis=1, keepdims=True)
    single = recall_at_k(index.search(queries, 10, QueryKnobs(), None).labels, data.ground_truth, 10)
    async with AsyncClient(loaded.router_address) as client:
        routed = recall_at_k(await search_rows(client, data.queries, 10), data.ground_truth, 10)
        status = await client.status()
    assert routed >= single - 0.01, f"router recall {routed:.4f} vs one in-process index {single:.4f}"
    counts = [r.point_count for r in status.replicas if r.collection == "glove"]
    assert all(r.trained and r.state == "serving" for r in status.replicas if r.collection == "glove")
    assert len(counts) == 3 and sum(counts) == N_BASE and min(counts) > 0.25 * N_BASE


async def test_filtered_search_through_the_router_equals_brute_force_filtered_topk(loaded, data):
    flt: Filter = And((Eq("rare", True), Eq("group", 0)))  # 0.5% of points: the shards' exact path
    rows = np.array([i for i in range(N_BASE) if matches(flt, point_metadata(i))])
    expected = rows[exact_ground_truth(data.base[rows], data.queries[:50], 10, "cosine")]
    async with AsyncClient(loaded.router_address) as client:
        results = await client.search("glove", data.queries[:50], 10, filter=flt, include_metadata=True)
    for result, want in zip(results, expected):
        assert [int(i[1:]) for i in result.ids] == want.tolist()
        assert result.strategy == "exact_filtered" and result.shards_asked == 3
        assert all(h.metadata["rare"] is True for h in result.hits)


async def test_partition_key_search_asks_one_shard_and_equals_filtered_scatter_gather(loaded, data):
    rng = np.random.default_rng(3)
    async with AsyncClient(loaded.router_address) as client:
        await client.create_collection("tenants", 50, index="hnsw", shards=3, partition_key_field="tenant")
        for tenant in ("acme", "globex", "initech"):
            vectors = data.base[rng.choice(N_BASE, 300, replace=False)]
            ids = [f"{tenant}-{i}" for i in range(300)]
            await client.upsert("tenants", ids, vectors, partition_key=tenant)  # the key is stored as "tenant"
        for tenant in ("acme", "globex", "initech"):
            keyed = await client.search("tenants", data.queries[:20], 10, partition_key=tenant)
            scattered = await client.search("tenants", data.queries[:20], 10, filter=Eq("tenant", tenant))
            assert all(r.shards_asked == 1 and r.shards_answered == 1 for r in keyed)
            assert all(r.shards_asked == 3 for r in scattered)
            assert [r.ids for r in keyed] == [r.ids for r in scattered]
            assert all(i.startswith(tenant) for r in keyed for i in r.ids)
            got = await client.get("tenants", [f"{tenant}-0", f"{tenant}-299"], partition_key=tenant)
            assert [p.id for p in got] == [f"{tenant}-0", f"{tenant}-299"]
            assert all(p.metadata == {"tenant": tenant} for p in got)
        await client.drop_collection("tenants")


async def test_delete_and_reupsert_through_the_router_show_in_the_next_search(loaded, data):
    async with AsyncClient(loaded.router_address) as client:
        target = data.base[123]
        assert (await client.search("glove", target, 1))[0].ids == ["w123"]
        assert await client.delete("glove", ["w123"]) == 1
        assert "w123" not in (await client.search("glove", target, 10))[0].ids
        await client.upsert("glove", ["w123"], target[None, :], [point_metadata(123)])
        assert (await client.search("glove", target, 1))[0].ids == ["w123"]
        deleted = await client.delete("glove", filter=Eq("word_len", 12))
        assert deleted == sum(1 for i in range(N_BASE) if point_metadata(i)["word_len"] == 12)
        results = await client.search("glove", data.queries[:5], 20, include_metadata=True)
        assert all(h.metadata.get("word_len") != 12 for r in results for h in r.hits)


async def test_concurrent_single_searches_coalesced_at_the_router_get_their_own_results(loaded, data):
    async with AsyncClient(loaded.router_address) as client:
        one_batch = await client.search("glove", data.queries[:32], 10)
        singles = await asyncio.gather(*(client.search("glove", data.queries[i], 10) for i in range(32)))
    assert [r[0].ids for r in singles] == [r.ids for r in one_batch]


async def test_a_query_for_another_embedding_model_is_refused(loaded, data):
    async with AsyncClient(loaded.router_address) as client:
        with pytest.raises(FailedPrecondition, match="glove-6b-50d"):
            await client.search("glove", data.queries[0], 5, model="all-MiniLM-L6-v2")


async def test_the_quiver_command_creates_loads_searches_and_reports_errors_in_one_line(loaded, data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"word": [f"p{i}" for i in range(300)], "vector": data.base[:300].tolist(), "group": [i % 3 for i in range(300)]})
    pq.write_table(table, tmp_path / "points.parquet")
    np.save(tmp_path / "queries.npy", data.base[:2])

    def quiver(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).with_name("quiver")), *args, "--router", loaded.router_address]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    created = await asyncio.to_thread(quiver, "create-collection", "cli", "--dim", "50", "--shards", "2", "--index", "flat")
    assert created.returncode == 0, created.stderr
    loaded_out = await asyncio.to_thread(quiver, "load", "cli", str(tmp_path / "points.parquet"), "--ids-column", "word")
    assert loaded_out.returncode == 0, loaded_out.stderr
    assert "loaded 300 vectors" in loaded_out.stdout
    found = await asyncio.to_thread(quiver, "search", "cli", "--vectors", str(tmp_path / "queries.npy"), "--row", "1", "-k", "3",
                                    "--filter", '{"eq": {"field": "group", "value": {"intValue": "1"}}}')
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[1].split()[1] == "p1"
    status = await asyncio.to_thread(quiver, "status")
    assert "collection cli" in status.stdout
    missing = await asyncio.to_thread(quiver, "search", "nope", "--vectors", str(tmp_path / "queries.npy"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "NotFound" in missing.stderr and "Traceback" not in missing.stderr


async def test_two_concurrent_creates_of_one_name_let_exactly_one_succeed(loaded):
    async with AsyncClient(loaded.router_address) as first, AsyncClient(loaded.router_address) as second:
        outcomes = await asyncio.gather(
            first.create_collection("race", 8, index="flat", shards=3),
            second.create_collection("race", 16, index="hnsw", shards=2),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert sum(isinstance(o, AlreadyExists) for o in outcomes) == 1
        described = await first.describe_collection("race")
        winner = next(o for o in outcomes if not isinstance(o, BaseException))
        assert described.spec.dim == winner.spec.dim
        await first.drop_collection("race")


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_CLIENT / "node_modules").exists(), reason="needs Node.js and npm ci in tests/node_client")
async def test_a_node_js_client_built_from_the_protos_alone_can_use_the_router(loaded):
    result = await asyncio.to_thread(
        subprocess.run, ["node", str(NODE_CLIENT / "client.mjs"), loaded.router_address, "node-test"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["ids"][0] == "north" and reply["ids"][1] == "north-east"
    assert reply["filtered_ids"] == ["north", "east"]
    assert reply["coverage"]["shards_asked"] == 2 and not reply["coverage"]["partial"]
    assert reply["model_mismatch"] == "FAILED_PRECONDITION"


async def test_replicated_shards_answer_reads_when_one_replica_is_frozen(loaded):
    vectors = np.random.default_rng(5).standard_normal((60, 8)).astype(np.float32)
    async with AsyncClient(loaded.router_address, timeout=6.0) as client:
        await client.create_collection("replicated", 8, index="flat", shards=2, replication_factor=2)
        await client.upsert("replicated", [f"r{i}" for i in range(60)], vectors)
        status = await client.status()
        replicas = [r for r in status.replicas if r.collection == "replicated"]
        assert len(replicas) == 4 and all(r.point_count > 0 for r in replicas)
        assert sum(r.point_count for r in replicas) == 2 * 60
        frozen = loaded.shard_servers[0].process
        assert frozen is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            results = await asyncio.wait_for(client.search("replicated", vectors[:5], 1), 15)
            assert [r.ids for r in results] == [[f"r{i}"] for i in range(5)]
            assert all(not r.partial and r.shards_answered == 2 for r in results)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        await client.drop_collection("replicated")


async def test_a_frozen_shard_costs_at_most_the_deadline(loaded, data):
    frozen = loaded.shard_servers[2].process
    assert frozen is not None
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        async with AsyncClient(loaded.router_address, timeout=2.0) as client:
            partial = await asyncio.wait_for(client.search("glove", data.queries[:3], 10, allow_partial=True), 10)
            assert all(r.partial and r.shards_asked == 3 and r.shards_answered == 2 for r in partial)
            # The router's own answer, before the caller's deadline: not the client giving up on a router
            # that waits for the frozen shard.
            with pytest.raises(Unavailable, match="did not answer"):
                await asyncio.wait_for(client.search("glove", data.queries[:3], 10), 10)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await all_servers_registered(loaded)  # frozen past its lease, it registers again on its next renewal


async def all_servers_registered(cluster: LocalCluster) -> None:
    async with AsyncClient(cluster.router_address, timeout=5.0) as client:
        async def registered() -> bool:
            return len((await client.status()).servers) == len(cluster.shard_servers)

        await assert_eventually_async(registered, timeout=15)


async def test_a_killed_shard_gives_partial_results_when_allowed_and_unavailable_otherwise(loaded, data):
    loaded.shard_servers[1].kill()
    async with AsyncClient(loaded.router_address, timeout=5.0) as client:
        partial = await asyncio.wait_for(client.search("glove", data.queries[:10], 10, allow_partial=True), 15)
        assert all(r.partial and r.shards_asked == 3 and r.shards_answered == 2 for r in partial)
        assert all(len(r.ids) == 10 for r in partial)
        with pytest.raises(Unavailable, match="did not answer"):
            await asyncio.wait_for(client.search("glove", data.queries[:10], 10), 15)
    loaded.shard_servers[1].start()
    async with AsyncClient(loaded.router_address, timeout=10.0) as client:
        for _ in range(100):
            try:
                if not (await client.search("glove", data.queries[:1], 10))[0].partial:
                    break
            except Unavailable:
                await asyncio.sleep(0.2)
        full = await client.search("glove", data.queries[:10], 10)
        assert all(not r.partial and r.shards_answered == 3 for r in full)


async def test_reads_and_writes_survive_an_etcd_outage_admin_fails_fast_naming_etcd_and_all_resumes(loaded, data):
    async with AsyncClient(loaded.router_address, timeout=10.0) as client:
        loaded.etcd.stop()
        try:
            for _ in range(5):
                results = await client.search("glove", data.queries[:5], 10)
                assert all(not r.partial and len(r.ids) == 10 for r in results)
            await client.upsert("glove", ["during-outage"], data.queries[:1])  # writes need no etcd
            found = await client.get("glove", ["during-outage"])
            assert [p.id for p in found] == ["during-outage"]
            # An admin call cannot be done without etcd: it says so, well inside the caller's deadline.
            async with AsyncClient(loaded.router_address, timeout=8.0) as impatient:
                with pytest.raises(Unavailable, match="etcd"):
                    await impatient.create_collection("during-outage", 8, index="flat", shards=2)
        finally:
            loaded.etcd.start()
        assert (await client.search("glove", data.queries[:1], 1))[0].ids == ["during-outage"]
        for _ in range(100):
            try:
                await client.create_collection("after-outage", 8, index="flat", shards=2)
                break
            except Unavailable:
                await asyncio.sleep(0.2)
        info = await client.describe_collection("after-outage")
        assert info.spec.shards == 2
        await client.upsert("after-outage", ["a"], np.ones((1, 8), dtype=np.float32))
        assert (await client.search("after-outage", np.ones(8, dtype=np.float32), 1))[0].ids == ["a"]
