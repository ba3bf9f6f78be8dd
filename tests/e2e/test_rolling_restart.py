"""A rolling restart of every shard server (SIGTERM, wait for exit, start again on the same data directory)
under a steady query load on a collection with replication factor 2 fails no query: each server drops out
of etcd before it drains, and reads go to the shard's other replica meanwhile; a restarted primary's
replica is promoted, and the server comes back as a follower that catches up and rejoins the in-sync set."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from quiver.client import Client
from quiver.local_cluster import LocalCluster
from tests.eventually import assert_eventually

DIM = 16
N = 3000


def all_serving(client: Client, collection: str, replicas: int) -> None:
    """Every replica is up and in sync (an operator restarts the next server only then, as `quiver status`
    shows it: a replica still catching up serves no reads, so its shard would have none left)."""
    states = [(r.state, r.role in ("primary", "in_sync")) for r in client.status().replicas if r.collection == collection]
    assert states == [("serving", True)] * replicas, states


def test_a_rolling_restart_of_every_shard_server_fails_no_query(tmp_path: Path):
    vectors = np.random.default_rng(1).standard_normal((N, DIM)).astype(np.float32)
    with LocalCluster(tmp_path, shards=3) as cluster, Client(cluster.router_address, timeout=30) as client:
        client.create_collection("rolling", DIM, index="hnsw", shards=3, replication_factor=2)
        client.upsert("rolling", [f"p{i}" for i in range(N)], vectors)
        expected = [r.ids for r in client.search("rolling", vectors[:50], 5)]

        stop = threading.Event()
        answered, failures, wrong = [0], [], []

        def query_load() -> None:
            with Client(cluster.router_address) as reader:
                n = 0
                while not stop.is_set():
                    row = n % 50
                    try:
                        (result,) = reader.search("rolling", vectors[row], 5, timeout=2.0)
                    except Exception as error:  # noqa: BLE001 - every failure is what this test counts
                        failures.append(f"{type(error).__name__}: {error}")
                    else:
                        answered[0] += 1
                        if result.partial or result.ids != expected[row]:
                            wrong.append((row, result.ids, result.partial))
                    n += 1

        readers = [threading.Thread(target=query_load) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            time.sleep(1.0)
            for server in cluster.shard_servers:
                before = answered[0]
                server.stop()  # SIGTERM: out of etcd, NOT_SERVING, drain, snapshot, exit
                assert not server.running
                server.start()  # same data directory, id and port
                assert_eventually(lambda: all_serving(client, "rolling", 6), timeout=30, interval=0.2)
                assert_eventually(lambda: answered[0] > before + 20, timeout=30)  # queries went on meanwhile
        finally:
            stop.set()
            for reader in readers:
                reader.join(30)
        assert failures == [], failures[:5]
        assert wrong == [], wrong[:5]
        assert answered[0] > 100
