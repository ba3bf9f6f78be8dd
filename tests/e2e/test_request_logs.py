"""JSON logs with request ids, from real processes: one search's id, given by the caller, comes back in
the response's metadata and appears in the router's log line for it and in every asked shard's."""
from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from quiver.client import Client
from quiver.errors import InvalidArgument
from quiver.local_cluster import LocalCluster, ServerProcess
from quiver.v1 import router_pb2, router_pb2_grpc
from tests.eventually import assert_eventually

DIM = 8


def json_lines(process: ServerProcess) -> list[dict]:
    events = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(
        Path(tmp_path_factory.mktemp("logs")), shards=2,
        shard_args=("--log-level", "DEBUG"),     # every RPC logged, at DEBUG
        router_args=("--slow-rpc-ms", "0", "--max-k", "5"),  # every RPC is "slow": the slow-query log, at WARNING
    ) as running:
        yield running


def test_a_callers_request_id_is_returned_and_logged_by_the_router_and_every_asked_shard(cluster: LocalCluster):
    vectors = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    with Client(cluster.router_address) as client:
        client.create_collection("logs", DIM, index="flat", shards=2)
        client.upsert("logs", [f"p{i}" for i in range(50)], vectors)
    request = router_pb2.RouterSearchRequest(collection="logs", queries=vectors[0].astype("<f4").tobytes(), k=3)
    with grpc.insecure_channel(cluster.router_address) as channel:
        call = router_pb2_grpc.RouterStub(channel).Search.with_call(request, metadata=(("x-request-id", "req-7f3a"),), timeout=10)
    response, rpc = call
    assert response.results[0].ids
    assert ("x-request-id", "req-7f3a") in tuple(rpc.trailing_metadata())

    def logged() -> None:
        (router_line,) = [e for e in json_lines(cluster.router) if e.get("request_id") == "req-7f3a"]  # type: ignore[arg-type]
        assert router_line["event"] == "slow rpc" and router_line["level"] == "warning"
        assert router_line["method"] == "quiver.v1.Router/Search" and router_line["code"] == "OK" and router_line["ms"] > 0
        for shard in cluster.shard_servers:
            lines = [e for e in json_lines(shard) if "req-7f3a" in e.get("request_id", "").split(",")]
            assert [(e["method"], e["level"]) for e in lines] == [("quiver.v1.Shard/Search", "debug")], shard.log_path

    assert_eventually(logged, timeout=5)


def test_a_request_without_an_id_gets_one(cluster: LocalCluster):
    with grpc.insecure_channel(cluster.router_address) as channel:
        _, rpc = router_pb2_grpc.RouterStub(channel).ListCollections.with_call(router_pb2.ListCollectionsRequest(), timeout=10)
    (request_id,) = [v for k, v in rpc.trailing_metadata() if k == "x-request-id"]
    assert len(request_id) == 16
    assert_eventually(lambda: any(e.get("request_id") == request_id for e in json_lines(cluster.router)), timeout=5)


def test_every_log_line_of_every_process_is_one_json_event(cluster: LocalCluster):
    for process in [cluster.router, *cluster.shard_servers]:
        text = process.log_path.read_text(errors="replace")  # type: ignore[union-attr]
        for line in text.splitlines():
            if line.startswith("{"):
                assert {"ts", "level", "logger", "event"} <= set(json.loads(line))


def test_a_limit_set_by_flag_is_the_one_enforced_and_the_start_up_log_says_where_it_came_from(cluster: LocalCluster):
    with Client(cluster.router_address) as client:
        client.create_collection("limits", DIM, index="flat")
        with pytest.raises(InvalidArgument, match="5"):
            client.search("limits", np.ones(DIM, np.float32), 6)
    (options,) = [e["options"] for e in json_lines(cluster.router) if e["event"] == "effective options"]  # type: ignore[arg-type]
    assert options["max_k"] == {"value": 5, "from": "commandline"}
    assert options["max_queued_searches"]["from"] == "default"
