"""Replication end to end with real processes (etcd, 3 shard servers, a router, started like `quiver up`):
a collection with replication_factor 2 keeps both replicas of every shard equal through upserts and
deletes, and after one shard server is SIGKILLed the router's gets and searches still answer in full.

Tests run in file order on one cluster; the last one kills a server.
"""
from __future__ import annotations

import numpy as np
import pytest

from quiver.client import AsyncClient
from quiver.filters import Range
from quiver.local_cluster import LocalCluster

DIM = 8
N = 90
DELETED = {f"p{i}" for i in range(0, N, 6)} | {f"p{i}" for i in range(80, N)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("replication"), shards=3) as running:
        yield running


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)


def replica_counts(status) -> dict[int, list[tuple[str, int]]]:  # type: ignore[no-untyped-def]
    """shard -> [(state, point_count)] of each of its replicas."""
    counts: dict[int, list[tuple[str, int]]] = {}
    for replica in status.replicas:
        if replica.collection == "rep":
            counts.setdefault(replica.shard, []).append((replica.state, replica.point_count))
    return counts


def exact_ids(vectors: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    kept = [i for i in range(N) if f"p{i}" not in DELETED]
    normed = vectors[kept] / np.linalg.norm(vectors[kept], axis=1, keepdims=True)
    return [f"p{kept[j]}" for j in np.argsort(-(normed @ (query / np.linalg.norm(query))), kind="stable")[:k]]


async def test_upserts_and_deletes_through_the_router_reach_both_replicas_of_every_shard(cluster, vectors):
    async with AsyncClient(cluster.router_address, timeout=20) as client:
        await client.create_collection("rep", DIM, index="flat", shards=3, replication_factor=2)
        await client.upsert("rep", [f"p{i}" for i in range(N)], vectors, [{"n": i} for i in range(N)])
        written = replica_counts(await client.status())
        assert sorted(written) == [0, 1, 2]
        assert all(len(r) == 2 and r[0] == r[1] and r[0][0] == "serving" for r in written.values()), written
        assert sum(r[0][1] for r in written.values()) == N

        by_id = sorted(DELETED - {f"p{i}" for i in range(80, N)})
        assert await client.delete("rep", by_id) == len(by_id)
        assert await client.delete("rep", filter=Range("n", gte=80)) == 10
        left = replica_counts(await client.status())
        assert all(r[0] == r[1] for r in left.values()), left
        assert sum(r[0][1] for r in left.values()) == N - len(DELETED)

        points = await client.get("rep", [f"p{i}" for i in range(N)])
        assert [p.id for p in points] == [f"p{i}" for i in range(N) if f"p{i}" not in DELETED]


async def test_after_a_shard_server_is_killed_gets_and_searches_still_answer_in_full(cluster, vectors):
    cluster.shard_servers[0].kill()  # first replica of shard 0, second of shard 2
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    async with AsyncClient(cluster.router_address, timeout=20) as client:
        points = await client.get("rep", [f"p{i}" for i in range(N)], include_vectors=True)
        assert [p.id for p in points] == [f"p{i}" for i in range(N) if f"p{i}" not in DELETED]
        for point in points:
            np.testing.assert_allclose(point.vector, normed[int(point.id[1:])], atol=1e-6)
        results = await client.search("rep", vectors[:20], 5)
        assert [r.ids for r in results] == [exact_ids(vectors, q, 5) for q in vectors[:20]]
        assert all(not r.partial and r.shards_answered == 3 for r in results)
        states = replica_counts(await client.status())
        assert sorted(state for r in states.values() for state, _ in r) == ["serving"] * 4 + ["unreachable"] * 2
