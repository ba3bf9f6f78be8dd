"""router/server_searches.py against an in-process stub: searches to one server in one turn of the loop
travel as one SearchMany once the server is known to get several, each answered or refused as its own,
the call naming every search's request id; a server that gets one a turn is sent plain Searches at once
again; a failed call is every search's."""
from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from quiver.logs import REQUEST_ID_KEY
from quiver.v1 import shard_pb2
from router.server_searches import LONE_TURNS_TO_STOP_GATHERING, ServerSearches


class Stub:
    """Answers each search with its k as the one hit's id; a search for k = 13 is refused NOT_FOUND."""

    def __init__(self, log: list[tuple[str, list[int]]], many_error: grpc.StatusCode | None = None) -> None:
        self.log = log
        self.many_error = many_error

    @staticmethod
    def answer(search: shard_pb2.SearchRequest) -> shard_pb2.SearchOutcome:
        if search.k == 13:
            return shard_pb2.SearchOutcome(code=grpc.StatusCode.NOT_FOUND.value[0], message="partition 13 does not exist",
                                           trailing=[shard_pb2.MetadataEntry(key="quiver-refusal", value="gone")])
        return shard_pb2.SearchOutcome(response=shard_pb2.SearchResponse(results=[{"ids": [str(search.k)]}]))

    async def Search(self, request: shard_pb2.SearchRequest, timeout: float, metadata: Any) -> shard_pb2.SearchResponse:
        self.log.append(("Search", [request.k]))
        outcome = self.answer(request)
        if outcome.code:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), outcome.message)
        return outcome.response

    async def SearchMany(self, request: shard_pb2.SearchManyRequest, timeout: float, metadata: Any) -> shard_pb2.SearchManyResponse:
        self.log.append(("SearchMany", [s.k for s in request.searches]))
        if self.many_error is not None:
            raise grpc.aio.AioRpcError(self.many_error, grpc.aio.Metadata(), grpc.aio.Metadata(), "injected")
        return shard_pb2.SearchManyResponse(outcomes=[self.answer(s) for s in request.searches])


async def turn(searches: ServerSearches, ks: list[int], address: str = "a") -> list[Any]:
    """One turn of the loop's searches, all sent before any is awaited; each answer's id or its error."""
    pending = [asyncio.ensure_future(searches.search(address, shard_pb2.SearchRequest(k=k), 5.0, ())) for k in ks]
    answers = await asyncio.gather(*pending, return_exceptions=True)
    return [a.results[0].ids[0] if isinstance(a, shard_pb2.SearchResponse) else (a.code(), a.details(), tuple(a.trailing_metadata())) for a in answers]


async def test_a_server_that_got_several_searches_in_a_turn_gets_them_as_one_call_from_then_on():
    log: list[tuple[str, list[int]]] = []
    searches = ServerSearches(lambda address: Stub(log))
    assert await turn(searches, [1, 2, 3]) == ["1", "2", "3"]
    assert log == [("Search", [1]), ("SearchMany", [2, 3])]  # the first went at once, before it was known
    log.clear()
    assert await turn(searches, [4, 5, 6]) == ["4", "5", "6"]
    assert await turn(searches, [7]) == ["7"]
    assert log == [("SearchMany", [4, 5, 6]), ("Search", [7])]
    assert (searches.calls_sent, searches.searches_sent) == (2, 5)


async def test_a_search_refused_inside_a_search_many_is_refused_alone_with_its_code_details_and_trailing_metadata():
    log: list[tuple[str, list[int]]] = []
    searches = ServerSearches(lambda address: Stub(log))
    await turn(searches, [1, 2])
    log.clear()
    answers = await turn(searches, [4, 13, 5])
    assert log == [("SearchMany", [4, 13, 5])]
    assert answers == ["4", (grpc.StatusCode.NOT_FOUND, "partition 13 does not exist", (("quiver-refusal", "gone"),)), "5"]


async def test_searches_to_different_servers_never_share_a_call():
    log: list[tuple[str, list[int]]] = []
    searches = ServerSearches(lambda address: Stub(log))
    for _ in range(2):
        pending = [asyncio.ensure_future(searches.search(address, shard_pb2.SearchRequest(k=k), 5.0, ()))
                   for address, k in (("a", 1), ("b", 2), ("a", 3), ("b", 4))]
        assert [r.results[0].ids[0] for r in await asyncio.gather(*pending)] == ["1", "2", "3", "4"]
    assert log[-2:] == [("SearchMany", [1, 3]), ("SearchMany", [2, 4])]


async def test_a_server_that_gets_one_search_a_turn_for_long_enough_is_sent_searches_at_once_again():
    log: list[tuple[str, list[int]]] = []
    searches = ServerSearches(lambda address: Stub(log))
    await turn(searches, [1, 2])
    for k in range(LONE_TURNS_TO_STOP_GATHERING - 1):
        await turn(searches, [k])
    log.clear()
    await turn(searches, [1, 2])
    assert log == [("SearchMany", [1, 2])]  # still gathering: a lone turn one short of the limit
    for k in range(LONE_TURNS_TO_STOP_GATHERING):
        await turn(searches, [k])
    log.clear()
    await turn(searches, [1, 2])
    assert log == [("Search", [1]), ("Search", [2])]  # the first went at once again


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_failed_search_many_call_is_every_searchs_failure(code):
    log: list[tuple[str, list[int]]] = []
    stub = Stub(log)
    searches = ServerSearches(lambda address: stub)
    await turn(searches, [1, 2])
    stub.many_error = code
    assert await turn(searches, [3, 4]) == [(code, "injected", ())] * 2


async def test_a_server_too_old_for_search_many_gets_each_search_as_a_plain_search_for_good():
    log: list[tuple[str, list[int]]] = []
    searches = ServerSearches(lambda address: Stub(log, many_error=grpc.StatusCode.UNIMPLEMENTED))
    assert await turn(searches, [1, 2, 3]) == ["1", "2", "3"]
    assert await turn(searches, [4, 5]) == ["4", "5"]
    assert log == [("Search", [1]), ("SearchMany", [2, 3]), ("Search", [2]), ("Search", [3]), ("Search", [4]), ("Search", [5])]


async def test_a_search_many_is_cancelled_once_every_caller_stopped_waiting():
    started, cancelled = asyncio.Event(), asyncio.Event()

    class Frozen(Stub):
        async def SearchMany(self, request, timeout, metadata):  # type: ignore[no-untyped-def]
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    searches = ServerSearches(lambda address: Frozen([]))
    await turn(searches, [1, 2])  # learns; the SearchMany of [2] never happens (a lone one is a Search)
    pending = [asyncio.ensure_future(searches.search("a", shard_pb2.SearchRequest(k=k), 5.0, ())) for k in (3, 4)]
    await asyncio.wait_for(started.wait(), 5)
    pending[0].cancel()
    await asyncio.sleep(0.05)
    assert not cancelled.is_set()  # one caller still waits
    pending[1].cancel()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_a_search_many_carries_the_request_id_of_every_search_it_carries_once_each():
    sent: list[tuple[str, Any]] = []

    class Recording(Stub):
        async def Search(self, request, timeout, metadata):  # type: ignore[no-untyped-def]
            sent.append(("Search", tuple(metadata)))
            return await super().Search(request, timeout, metadata)

        async def SearchMany(self, request, timeout, metadata):  # type: ignore[no-untyped-def]
            sent.append(("SearchMany", tuple(metadata)))
            return await super().SearchMany(request, timeout, metadata)

    searches = ServerSearches(lambda address: Recording([]))
    await turn(searches, [1, 2])  # now known to get several a turn
    sent.clear()
    ids = ["req-a", "req-b", "req-a", "req-c"]  # two searches of one coalesced request share its id
    pending = [asyncio.ensure_future(searches.search("a", shard_pb2.SearchRequest(k=k), 5.0, ((REQUEST_ID_KEY, i),)))
               for k, i in zip([3, 4, 5, 6], ids)]
    await asyncio.gather(*pending)
    assert sent == [("SearchMany", ((REQUEST_ID_KEY, "req-a,req-b,req-c"),))]
