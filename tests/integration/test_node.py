"""Node mode (router/node.py): a router and a shard server in one process, the router's calls to its own
shard server made in process. Proven against real etcd and real indexes: answers match a plain
cluster's (exact top-k), the local calls carry on with the shard's gRPC port closed (so they really are
local), a shard's errors and deadlines reach the router as the codes a remote call gives, and searches of
the local partitions go by one direct call (router/local_searches.py) that fails over to another node's
replica when the local one is missing, but not when the caller erred."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from quiver.client import AsyncClient
from quiver.errors import InvalidArgument, NotFound
from quiver.logs import REQUEST_ID_KEY
from quiver.v1 import shard_pb2
from router.config import RouterConfig
from router.node import Node, NodeConfig
from shard.config import ShardConfig

DIM = 16
N = 600


def node_config(etcd, etcd_root: str, data_dir: Path, server_id: str, **shard_options) -> NodeConfig:  # noqa: ANN001
    endpoints = (etcd.endpoint,)
    return NodeConfig(
        ShardConfig(data_dir=data_dir, etcd_endpoints=endpoints, etcd_root=etcd_root, server_id=server_id, lease_ttl_s=3.0, **shard_options),
        RouterConfig(etcd_endpoints=endpoints, etcd_root=etcd_root),
    )


@pytest.fixture
async def node(etcd, etcd_root, tmp_path: Path):
    running = Node(node_config(etcd, etcd_root, tmp_path / "node", "node-0"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def loaded(node: Node) -> tuple[AsyncClient, np.ndarray]:
    assert node.router is not None
    client = AsyncClient(node.router.address, timeout=30)
    await client.create_collection("docs", DIM, index="flat", shards=3)
    vectors = unit(np.random.default_rng(0), N)
    await client.upsert("docs", [f"p{i}" for i in range(N)], vectors, [{"n": i} for i in range(N)])
    return client, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(vectors @ query), kind="stable")[:k])


async def test_a_node_answers_a_three_shard_collection_with_the_exact_top_k_through_local_calls(node):
    client, vectors = await loaded(node)
    try:
        queries = unit(np.random.default_rng(1), 8)
        results = await client.search("docs", queries, 10, include_metadata=True)
        for query, result in zip(queries, results):
            assert [int(i[1:]) for i in result.ids] == exact_top(vectors, query, 10)
            assert [h.metadata["n"] for h in result.hits] == [int(i[1:]) for i in result.ids]
            assert result.shards_answered == 3
        assert sorted(p.id for p in await client.get("docs", ["p3", "p599"])) == ["p3", "p599"]
    finally:
        await client.close()


async def test_with_the_shard_port_closed_the_node_still_reads_and_writes_its_own_shards(node):
    client, vectors = await loaded(node)
    await node.shard.server.stop(0)  # nothing reaches the shard server over gRPC any more
    try:
        queries = unit(np.random.default_rng(2), 4)
        results = await client.search("docs", queries, 5)
        assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, 5) for q in queries]
        await client.upsert("docs", ["new"], queries[:1])
        assert (await client.search("docs", queries[:1], 1))[0].ids == ["new"]
    finally:
        await client.close()


async def test_a_shard_error_through_a_local_call_is_the_status_a_remote_call_gives(node):
    assert node.router is not None
    stub = node.router.pool.stub(node.shard.address)
    missing = shard_pb2.PartitionRef(collection="nope", shard=0, version=1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Search(shard_pb2.SearchRequest(ref=missing, queries=np.zeros(DIM, "<f4").tobytes(), k=1), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in raised.value.details()
    # The request id the servicer puts in the trailers comes back, as over the wire.
    assert any(key == REQUEST_ID_KEY for key, _ in raised.value.trailing_metadata())
    # A client error seen by the router keeps its code (not UNKNOWN or INTERNAL).
    client = AsyncClient(node.router.address, timeout=5)
    try:
        with pytest.raises(NotFound):
            await client.search("nope", np.zeros((1, DIM), np.float32), 1)
    finally:
        await client.close()


async def test_a_local_call_past_its_deadline_is_deadline_exceeded_and_the_handler_is_cancelled(node):
    assert node.router is not None
    stub = node.router.pool.stub(node.shard.address)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request, context):  # noqa: ANN001 - stands in for a handler stuck on a busy index
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stub.Stats._handler = slow  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Stats(shard_pb2.StatsRequest(), timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert started.is_set() and cancelled.is_set()


async def test_a_filtered_search_reports_its_strategy_and_the_matches_summed_over_the_shards(node):
    client, vectors = await loaded(node)
    try:
        from quiver.filters import Range

        query = unit(np.random.default_rng(3), 1)
        [result] = await client.search("docs", query, 5, filter=Range("n", lt=60))
        assert result.filter_matches == 60  # spread over the three shards
        assert result.strategy == "exact_filtered" and result.estimated_cost_us > 0
        assert [int(i[1:]) for i in result.ids] == [r for r in exact_top(vectors, query[0], N) if r < 60][:5]
    finally:
        await client.close()


async def test_a_search_of_local_partitions_is_one_direct_call_into_the_shard_server_not_a_local_rpc_per_partition(node):
    client, vectors = await loaded(node)
    assert node.router is not None
    local, batched = node.router.servicer.local_searches, node.router.servicer.server_searches
    assert local is not None and batched is not None
    try:
        queries = unit(np.random.default_rng(4), 3)
        calls_before = local.calls
        for query in queries:  # one query at a time: each is one direct call for its three partitions
            [result] = await client.search("docs", query[None, :], 10)
            assert [int(i[1:]) for i in result.ids] == exact_top(vectors, query, 10)
            assert result.shards_answered == 3
        results = await client.search("docs", queries, 10)  # a batch goes the same way
        assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, 10) for q in queries]
        assert local.calls - calls_before == 4
        assert batched.calls_sent == 0 and local.failovers == 0
    finally:
        await client.close()


@pytest.fixture
async def two_nodes(etcd, etcd_root, tmp_path: Path):
    """Two nodes; node 0's shard server refuses k above 20 (its router allows 10,000)."""
    nodes = [
        Node(node_config(etcd, etcd_root, tmp_path / "n0", "node-0", max_k=20)),
        Node(node_config(etcd, etcd_root, tmp_path / "n1", "node-1")),
    ]
    for running in nodes:
        await running.start()
    try:
        yield nodes
    finally:
        for running in nodes:
            await running.stop()


async def replicated(nodes: list[Node]) -> tuple[AsyncClient, np.ndarray]:
    """Every shard on both nodes; writes acknowledged once both hold them."""
    assert nodes[0].router is not None
    client = AsyncClient(nodes[0].router.address, timeout=30)
    for _ in range(100):  # until node 0's router has seen both shard servers register
        if len((await client.status()).servers) == 2:
            break
        await asyncio.sleep(0.05)
    await client.create_collection("docs", DIM, index="flat", shards=3, replication_factor=2, min_in_sync=2)
    vectors = unit(np.random.default_rng(0), N)
    await client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
    return client, vectors


async def test_a_local_partition_missing_from_the_shard_server_is_searched_on_the_other_nodes_replica_and_then_avoided(two_nodes):
    client, vectors = await replicated(two_nodes)
    first = two_nodes[0]
    assert first.router is not None and first.router.servicer.local_searches is not None
    registry = first.shard.servicer._registry._partitions  # noqa: SLF001 - the fault: placement ahead of this server
    missing = {key: registry.pop(key) for key in [k for k in registry if k.shard in (0, 2)]}
    assert len(missing) == 2
    try:
        queries = unit(np.random.default_rng(5), 4)
        results = await client.search("docs", queries, 10)
        assert [[int(i[1:]) for i in r.ids] for r in results] == [exact_top(vectors, q, 10) for q in queries]
        assert all(r.shards_answered == 3 and not r.partial for r in results)
        assert first.router.servicer.local_searches.failovers == 2  # shard 1 was answered here
        # The refusals went on the local replica's record: the next search goes to node 1 first, as
        # ReplicaReads would send it, instead of failing over again.
        calls = first.router.servicer.local_searches.calls
        again = await client.search("docs", queries, 10)
        assert [[int(i[1:]) for i in r.ids] for r in again] == [exact_top(vectors, q, 10) for q in queries]
        assert first.router.servicer.local_searches.failovers == 2
        assert first.router.servicer.local_searches.calls == calls
    finally:
        registry.update(missing)
        await client.close()


async def test_a_local_search_refused_for_the_callers_mistake_is_that_answer_not_failed_over(two_nodes):
    client, _ = await replicated(two_nodes)
    first = two_nodes[0]
    assert first.router is not None and first.router.servicer.local_searches is not None
    try:
        with pytest.raises(InvalidArgument, match="20"):
            await client.search("docs", unit(np.random.default_rng(6), 1), 25)
        assert first.router.servicer.local_searches.failovers == 0
    finally:
        await client.close()


async def test_hnsw_partitions_searched_one_after_another_in_process_answer_metadata_vectors_and_keyed_searches_exactly(node):
    """HNSW at ef far above the partition size is exact, so the direct path's sequential branch (inline single
    queries, HNSW batches one partition after another, the query prepared once) is checked against brute force."""
    assert node.router is not None and node.router.servicer.local_searches is not None
    client = AsyncClient(node.router.address, timeout=30)
    try:
        vectors = unit(np.random.default_rng(7), N)
        await client.create_collection("graph", DIM, index="hnsw", shards=3)
        await client.upsert("graph", [f"p{i}" for i in range(N)], vectors, [{"n": i} for i in range(N)])
        await client.create_collection("tenants", DIM, index="hnsw", shards=3, partition_key_field="tenant")
        for tenant, rows in (("acme", vectors[: N // 2]), ("globex", vectors[N // 2 :])):
            await client.upsert("tenants", [f"t{i}" for i in range(len(rows))], rows, partition_key=tenant)
        calls = node.router.servicer.local_searches.calls
        queries = unit(np.random.default_rng(8), 5)
        for batch in (queries[:1], queries):
            results = await client.search("graph", batch, 7, ef_search=N, include_metadata=True, include_vectors=True)
            for query, result in zip(batch, results):
                top = exact_top(vectors, query, 7)
                assert [int(i[1:]) for i in result.ids] == top
                assert [h.metadata["n"] for h in result.hits] == top
                assert np.allclose(np.stack([h.vector for h in result.hits]), vectors[top], atol=1e-6)
        [keyed] = await client.search("tenants", queries[:1], 5, ef_search=N, partition_key="globex")
        assert keyed.ids == [f"t{i}" for i in exact_top(vectors[N // 2 :], queries[0], 5)]
        assert node.router.servicer.local_searches.calls - calls == 3
    finally:
        await client.close()
