"""The cached labelled children behind observe_rpc and timed_call count into the registry that is scraped."""
from __future__ import annotations

from prometheus_client import REGISTRY

from quiver.metrics import RPC_REQUESTS, SHARD_CALL_SECONDS, children_of, observe_rpc, timed_call


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_rpc_counts_each_code_apart_in_the_scraped_registry():
    ok = {"service": "test.Children", "method": "Search", "code": "OK"}
    failed = ok | {"code": "NOT_FOUND"}
    before_ok, before_failed = sample("quiver_rpc_requests_total", ok), sample("quiver_rpc_requests_total", failed)
    for _ in range(3):
        observe_rpc("test.Children", "Search", "OK", 0.002)
    observe_rpc("test.Children", "Search", "NOT_FOUND", 0.001)
    assert sample("quiver_rpc_requests_total", ok) - before_ok == 3
    assert sample("quiver_rpc_requests_total", failed) - before_failed == 1
    assert sample("quiver_rpc_duration_seconds_count", {"service": "test.Children", "method": "Search"}) >= 4
    assert children_of(RPC_REQUESTS)("test.Children", "Search", "OK") is RPC_REQUESTS.labels("test.Children", "Search", "OK")


async def test_timed_call_observes_each_server_apart():
    async def answer() -> str:
        return "done"

    labels = {"method": "Search", "server": "127.0.0.1:1"}
    before = sample("quiver_router_shard_call_duration_seconds_count", labels)
    assert await timed_call(SHARD_CALL_SECONDS, ("Search", "127.0.0.1:1"), answer) == "done"
    assert await timed_call(SHARD_CALL_SECONDS, ("Search", "127.0.0.1:2"), answer) == "done"
    assert sample("quiver_router_shard_call_duration_seconds_count", labels) - before == 1
