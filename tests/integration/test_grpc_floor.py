"""The gRPC floor servers bench_peers measures beside Quiver (loadtest/grpc_floor.py), as real processes:
an echo answers each query with its canned hits, and a relay answers only once every backend has."""
from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from loadtest.bench_common import packed
from quiver.local_cluster import ServerProcess, free_port
from quiver.v1 import router_pb2, router_pb2_grpc

DIM = 8


def floor_server(tmp_path: Path, name: str, *extra: str) -> ServerProcess:
    return ServerProcess(["-m", "loadtest.grpc_floor", "--dim", str(DIM), *extra], tmp_path / f"{name}.log")


def search(address: str, n_queries: int) -> router_pb2.RouterSearchResponse:
    queries = np.random.default_rng(0).standard_normal((n_queries, DIM)).astype(np.float32)
    with grpc.insecure_channel(address) as channel:
        return router_pb2_grpc.RouterStub(channel).Search(router_pb2.RouterSearchRequest(collection="c", queries=packed(queries), k=4), timeout=10)


def test_echo_answers_each_query_with_its_canned_hits_and_a_relay_waits_for_every_backend(tmp_path: Path):
    echoes = [floor_server(tmp_path, f"echo{i}", "--hits", str(3 + i)) for i in range(2)]
    relays: list[ServerProcess] = []
    try:
        for echo in echoes:
            echo.start()
        answer = search(echoes[0].address, 3)
        assert [len(r.ids) for r in answer.results] == [3, 3, 3]
        assert all(list(r.scores) == sorted(r.scores, reverse=True) for r in answer.results)

        relays.append(floor_server(tmp_path, "relay", "--relay-to", ",".join(e.address for e in echoes)).start())
        assert [len(r.ids) for r in search(relays[0].address, 2).results] == [3, 3]  # the first backend's answer

        # A relay with one backend that is not there fails every search: it waits for all of them.
        relays.append(floor_server(tmp_path, "broken", "--relay-to", f"{echoes[0].address},127.0.0.1:{free_port()}").start())
        with pytest.raises(grpc.RpcError) as refused:
            search(relays[1].address, 1)
        assert refused.value.code() != grpc.StatusCode.OK
    finally:
        for process in [*relays, *echoes]:
            process.stop()
