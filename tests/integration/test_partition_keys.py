"""Partition keys declared at creation, through a real router over fake shards: a keyed collection
identifies a point by (key, id), every write, get and delete names its key, a keyed search sees only its
key's points, and no answer holds one point twice. An unkeyed collection refuses a key."""
from __future__ import annotations

import numpy as np
import pytest

from quiver.errors import InvalidArgument
from quiver.filters import Eq
from tests.fake_shard import fake_cluster

DIM = 4


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
async def cluster(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root) as running:
        await running.client.create_collection("keyed", DIM, index="flat", shards=3, partition_key_field="tenant")
        await running.client.create_collection("plain", DIM, index="flat", shards=3)
        yield running


async def test_a_keyed_collection_refuses_writes_and_reads_that_name_no_key_and_a_plain_one_refuses_keys(cluster):
    client = cluster.client
    with pytest.raises(InvalidArgument, match="partitioned by metadata field 'tenant'"):
        await client.upsert("keyed", ["a"], rows(1))
    with pytest.raises(InvalidArgument, match="must name its partition_key"):
        await client.get("keyed", ["a"])
    with pytest.raises(InvalidArgument, match="must name its partition_key"):
        await client.delete("keyed", ["a"])
    with pytest.raises(InvalidArgument, match="declares no partition key"):
        await client.upsert("plain", ["a"], rows(1), partition_key="acme")
    with pytest.raises(InvalidArgument, match="declares no partition key"):
        await client.search("plain", rows(1), 1, partition_key="acme")
    with pytest.raises(InvalidArgument, match="other than the request's partition_key"):
        await client.upsert("keyed", ["a"], rows(1), [{"tenant": "globex"}], partition_key="acme")
    assert cluster.data_requests() == []  # all refused at the router


async def test_one_id_under_two_keys_is_two_points_and_each_key_reads_and_deletes_only_its_own(cluster):
    client = cluster.client
    vectors = rows(2)
    await client.upsert("keyed", ["doc"], vectors[:1], [{"n": 1}], partition_key="acme")
    await client.upsert("keyed", ["doc"], vectors[1:], [{"n": 2}], partition_key="globex")
    (acme,) = await client.get("keyed", ["doc"], partition_key="acme", include_vectors=True)
    (globex,) = await client.get("keyed", ["doc"], partition_key="globex", include_vectors=True)
    assert (acme.id, acme.metadata) == ("doc", {"n": 1, "tenant": "acme"})
    assert (globex.id, globex.metadata) == ("doc", {"n": 2, "tenant": "globex"})
    np.testing.assert_allclose(acme.vector, vectors[0] / np.linalg.norm(vectors[0]), atol=1e-6)

    # Unkeyed search: both points, each once, told apart by their key.
    [everyone] = await client.search("keyed", vectors[0], 10, include_metadata=True)
    assert sorted((h.id, h.metadata["tenant"]) for h in everyone.hits) == [("doc", "acme"), ("doc", "globex")]
    # Keyed search: that key's point alone, without the caller adding a filter.
    [own] = await client.search("keyed", vectors[1], 10, partition_key="acme", include_metadata=True)
    assert [(h.id, h.metadata["tenant"]) for h in own.hits] == [("doc", "acme")] and own.shards_asked == 1
    # A keyed filter search narrows within the key.
    [none] = await client.search("keyed", vectors[0], 10, partition_key="acme", filter=Eq("n", 2))
    assert none.ids == []

    assert await client.delete("keyed", ["doc"], partition_key="acme") == 1
    assert await client.get("keyed", ["doc"], partition_key="acme") == []
    assert [p.id for p in await client.get("keyed", ["doc"], partition_key="globex")] == ["doc"]
    assert await client.delete("keyed", filter=Eq("n", 2), partition_key="acme") == 0  # globex's is not acme's
    assert await client.delete("keyed", filter=Eq("n", 2), partition_key="globex") == 1
