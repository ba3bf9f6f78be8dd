"""The Python client against a programmable in-process router (real gRPC on loopback): gRPC's own retries
for idempotent calls only, per-call timeouts, int ids, dataclass answers, errors with `.code`."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from quiver.client import AsyncClient, CollectionInfo, collection_spec
from quiver.errors import DeadlineExceeded, InvalidArgument, QuiverError, ResourceExhausted, Unavailable
from quiver.v1 import router_pb2, router_pb2_grpc


class ScriptedRouter(router_pb2_grpc.RouterServicer):
    """Answers from a script: each method fails with the queued codes first, then succeeds."""

    def __init__(self) -> None:
        self.failures: dict[str, list[grpc.StatusCode]] = {}
        self.attempts: dict[str, int] = {}
        self.delay = 0.0
        self.requests: list[object] = []

    async def _answer(self, method: str, request: object, context: grpc.aio.ServicerContext, reply: object) -> object:
        self.attempts[method] = self.attempts.get(method, 0) + 1
        self.requests.append(request)
        queued = self.failures.get(method)
        if queued:
            code = queued.pop(0)
            pushback = (("grpc-retry-pushback-ms", "250"),) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else ()
            await context.abort(code, f"scripted failure of {method}", pushback)
        await asyncio.sleep(self.delay)
        return reply

    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer("Search", request, context, router_pb2.RouterSearchResponse())

    async def Upsert(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer("Upsert", request, context, router_pb2.RouterUpsertResponse(upserted=len(request.ids)))

    async def Get(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer("Get", request, context, router_pb2.RouterGetResponse())

    async def CreateCollection(self, request, context):  # type: ignore[no-untyped-def]
        info = router_pb2.CollectionInfo(spec=request.spec, active_version=1, created_unix=1700000000)
        return await self._answer("CreateCollection", request, context, router_pb2.CreateCollectionResponse(collection=info))

    async def DescribeCollection(self, request, context):  # type: ignore[no-untyped-def]
        spec = collection_spec(request.name, 8, index="hnsw", index_params={"m": 16, "ef_search": 64}, shards=3, model="m1")
        info = router_pb2.CollectionInfo(spec=spec, active_version=2, created_unix=1700000000)
        return await self._answer("DescribeCollection", request, context, router_pb2.DescribeCollectionResponse(collection=info))


@pytest.fixture
async def router():
    scripted = ScriptedRouter()
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(scripted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
        yield scripted, client
    await server.stop(0)


async def test_idempotent_calls_are_retried_on_unavailable_by_grpc(router):
    scripted, client = router
    scripted.failures["Search"] = [grpc.StatusCode.UNAVAILABLE] * 2
    assert await client.search("docs", np.ones(8, np.float32), 3) == []
    assert scripted.attempts["Search"] == 3
    scripted.failures["Upsert"] = [grpc.StatusCode.UNAVAILABLE]
    assert await client.upsert("docs", ["a"], np.ones((1, 8), np.float32)) == 1
    assert scripted.attempts["Upsert"] == 2


async def test_creates_and_other_codes_are_not_retried(router):
    scripted, client = router
    scripted.failures["CreateCollection"] = [grpc.StatusCode.UNAVAILABLE]
    with pytest.raises(Unavailable) as failed:
        await client.create_collection("docs", 8)
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert scripted.attempts["CreateCollection"] == 1
    scripted.failures["Search"] = [grpc.StatusCode.INVALID_ARGUMENT]
    with pytest.raises(InvalidArgument):
        await client.search("docs", np.ones(8, np.float32), 3)
    assert scripted.attempts["Search"] == 1


async def test_retries_give_up_after_four_attempts(router):
    scripted, client = router
    scripted.failures["Get"] = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(Unavailable):
        await client.get("docs", ["a"])
    assert scripted.attempts["Get"] == 4


async def test_a_code_outside_the_table_keeps_its_code(router):
    scripted, client = router
    scripted.failures["Get"] = [grpc.StatusCode.DATA_LOSS]
    with pytest.raises(QuiverError) as failed:
        await client.get("docs", ["a"])
    assert type(failed.value) is QuiverError and failed.value.code == grpc.StatusCode.DATA_LOSS


async def test_a_per_call_timeout_overrides_the_clients(router):
    scripted, client = router
    scripted.delay = 0.5
    with pytest.raises(DeadlineExceeded):
        await client.get("docs", ["a"], timeout=0.1)
    assert await client.get("docs", ["a"]) == []  # the client's 10 s


async def test_int_ids_are_sent_as_their_decimal_text_and_other_types_are_refused(router):
    scripted, client = router
    await client.upsert("docs", [7, "x", 12], np.ones((3, 8), np.float32))
    assert list(scripted.requests[-1].ids) == ["7", "x", "12"]
    with pytest.raises(TypeError, match=r"ids\[1\] is bool"):
        await client.upsert("docs", [1, True], np.ones((2, 8), np.float32))
    with pytest.raises(TypeError, match=r"ids\[0\] is float"):
        await client.get("docs", [1.5])


async def test_admin_answers_are_dataclasses(router):
    _, client = router
    info = await client.describe_collection("docs")
    assert isinstance(info, CollectionInfo)
    assert (info.spec.name, info.spec.dim, info.spec.metric, info.spec.index, info.spec.shards, info.spec.model) == (
        "docs", 8, "cosine", "hnsw", 3, "m1")
    assert info.spec.index_params == {"m": 16, "ef_search": 64} and info.active_version == 2


async def test_an_overload_refusal_carries_the_servers_retry_after(router):
    scripted, client = router
    scripted.failures["CreateCollection"] = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    with pytest.raises(ResourceExhausted) as refused:
        await client.create_collection("docs", 8)
    assert refused.value.retry_after_s == 0.25 and refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
