"""A node process (router + shard server in one, `python -m router.node`) beside a plain shard server:
it serves a collection spread over both (its own shard in process, the other over gRPC), and after a
SIGKILL and a restart on its data directory it answers the same."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from quiver.client import Client
from quiver.local_cluster import LocalCluster

DIM = 12
N = 400


def test_a_node_and_a_shard_server_serve_one_collection_and_the_node_comes_back_after_sigkill(tmp_path: Path):
    with LocalCluster(tmp_path, shards=1, routers=0, nodes=1) as cluster:
        [node] = cluster.nodes
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((N, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = vectors[:5]
        with Client(node.address, timeout=30) as client:
            client.create_collection("docs", DIM, index="flat", shards=4)
            client.upsert("docs", [f"p{i}" for i in range(N)], vectors)
            before = client.search("docs", queries, 10)
            status = client.status()
        assert len({r.server_id for r in status.replicas if r.collection == "docs"}) == 2  # both servers hold shards
        for query, result in zip(queries, before):
            assert [int(i[1:]) for i in result.ids] == list(np.argsort(-(vectors @ query), kind="stable")[:10])
            assert result.shards_answered == 4
        node.kill()
        node.start()
        with Client(node.address, timeout=30) as client:
            after = client.search("docs", queries, 10)
        assert [r.ids for r in after] == [r.ids for r in before]
