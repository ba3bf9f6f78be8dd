"""Prometheus metrics scraped from real processes (a LocalCluster started with --metrics-port 0) while a
query load runs: the counters and histograms that should move with it, move, by the amount of the load."""
from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster

DIM = 16
SEARCHES = 40


def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    metrics = ("--metrics-port", "0")
    with LocalCluster(Path(tmp_path_factory.mktemp("metrics")), shards=2, shard_args=metrics, router_args=metrics) as running:
        yield running


def test_request_counters_latency_histograms_and_partition_gauges_move_with_the_load(cluster: LocalCluster):
    router, shards = cluster.router.metrics_address, [s.metrics_address for s in cluster.shard_servers]  # type: ignore[union-attr]
    assert router and all(shards)
    vectors = np.random.default_rng(0).standard_normal((500, DIM)).astype(np.float32)

    async def load() -> None:
        async with AsyncClient(cluster.router_address, timeout=30) as client:
            await client.create_collection("m", DIM, index="hnsw", shards=2)
            await client.upsert("m", [f"p{i}" for i in range(500)], vectors)
            before = scrape(router)
            for n in range(SEARCHES):
                await client.search("m", vectors[n], 5)
            after = scrape(router)
            search = dict(service="quiver.v1.Router", method="Search")
            assert value(after, "quiver_rpc_requests_total", code="OK", **search) - value(before, "quiver_rpc_requests_total", code="OK", **search) == SEARCHES
            assert value(after, "quiver_rpc_duration_seconds_count", **search) - value(before, "quiver_rpc_duration_seconds_count", **search) == SEARCHES
            assert value(after, "quiver_rpc_duration_seconds_sum", **search) > value(before, "quiver_rpc_duration_seconds_sum", **search)
            # Each search asks both shards.
            calls = value(after, "quiver_router_shard_call_duration_seconds_count", method="Search") - value(
                before, "quiver_router_shard_call_duration_seconds_count", method="Search")
            assert calls == 2 * SEARCHES
            # ... one per shard server, each under its own address.
            for shard in cluster.shard_servers:
                assert value(after, "quiver_router_shard_call_duration_seconds_count", method="Search", server=shard.address) - value(
                    before, "quiver_router_shard_call_duration_seconds_count", method="Search", server=shard.address) == SEARCHES
            with pytest.raises(Exception):
                await client.search("no-such-collection", vectors[0], 5)
            assert value(scrape(router), "quiver_rpc_requests_total", code="NOT_FOUND", **search) == 1
            # Creating the collection changed the cluster state: the router's watch applied it.
            assert value(after, "quiver_cluster_watch_apply_seconds_count") >= 1
            assert value(after, "quiver_cluster_state_revision") > 0

    asyncio.run(load())
    per_shard = [scrape(address) for address in shards]
    assert sum(value(s, "quiver_shard_partition_points", collection="m") for s in per_shard) == 500
    assert all(value(s, "quiver_shard_partition_wal_bytes", collection="m") > 0 for s in per_shard)
    assert all(value(s, "quiver_shard_partition_index_bytes", collection="m") > 0 for s in per_shard)
    assert all(value(s, "quiver_shard_wal_fsync_duration_seconds_count") >= 1 for s in per_shard)
    # Each process froze its start-up heap (quiver.gc_tuning): full collections skip those objects.
    assert value(scrape(router), "quiver_gc_frozen_objects") > 10_000
    assert all(value(s, "quiver_gc_frozen_objects") > 10_000 for s in per_shard)
    shard_searches = sum(value(s, "quiver_rpc_requests_total", service="quiver.v1.Shard", method="Search", code="OK") for s in per_shard)
    assert shard_searches == 2 * SEARCHES
    assert all(value(s, "quiver_shard_partition_read_only", collection="m") == 0 for s in per_shard)
    # The upsert made each shard's points searchable once (one write per shard).
    assert all(value(s, "quiver_shard_write_visible_seconds_count") >= 1 for s in per_shard)
