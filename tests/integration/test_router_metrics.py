"""The router's replica metrics, in process against fake shards: failovers of reads to another replica move
by what the faults cause. (Replica lag is measured by the primary: tests/integration/test_replication.py.)"""
from __future__ import annotations

import grpc
import numpy as np
from prometheus_client import REGISTRY

from tests.fake_shard import fake_cluster

DIM = 4


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_read_from_a_failed_replica_shows_in_failovers(etcd, etcd_root):
    async with fake_cluster(etcd.endpoint, etcd_root, servers=2) as cluster:
        await cluster.client.create_collection("docs", DIM, index="flat", shards=1, replication_factor=2)
        await cluster.client.upsert("docs", ["a"], np.ones((1, DIM), np.float32))
        failovers = sample("quiver_router_replica_failovers_total")
        for fake in cluster.fakes:
            fake.heal()
        first = cluster.router.servicer.replica_reads.order([f.address for f in cluster.fakes])[0]
        (failing,) = [f for f in cluster.fakes if f.address == first]
        failing.fail("Get", grpc.StatusCode.UNAVAILABLE)
        assert [p.id for p in await cluster.client.get("docs", ["a"])] == ["a"]
        assert sample("quiver_router_replica_failovers_total") == failovers + 1
