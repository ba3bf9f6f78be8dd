"""One call per shard server for the searches of one query or batch, not one per partition.

A collection's shards share servers (a node holds all of its shards; a cluster of 4 servers holds 16
shards' replicas 4 or more to a server), and a search asks every shard. Each call costs the router and
the server a gRPC round trip's CPU, more than an HNSW query (loadtest/grpc_floor.py measures it), so the
searches that go to one server in the same turn of the event loop are sent together as one `SearchMany`.

Callers see no difference: `search(address, request, ...)` answers with that partition's SearchResponse
or raises the grpc.aio.AioRpcError a lone Search would have raised, built from its outcome (code, details,
trailing metadata: a refusal marker, a retry pushback), so replica choice, hedging and failover (router/
replica_reads.py) work per partition as before. A failure of the call itself is every search's. A search
its caller stops waiting for (a hedge won, a deadline passed) is dropped; the call is cancelled once all
of its searches are. A lone search goes as a plain Search, and so does every search to a server too old to
know SearchMany (UNIMPLEMENTED, remembered per address).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import grpc
from grpc.aio import Metadata

from quiver.logs import REQUEST_ID_KEY, outgoing_metadata
from quiver.metrics import SHARD_CALL_SECONDS, timed_call
from quiver.v1 import shard_pb2
from quiver.wire import search_outcomes

MetadataPairs = tuple[tuple[str, str], ...]
# A server that got one search a turn this many turns in a row has its searches sent at once again.
LONE_TURNS_TO_STOP_GATHERING = 64


@dataclass
class _Waiting:
    request: shard_pb2.SearchRequest
    deadline: float
    metadata: MetadataPairs
    answer: asyncio.Future[shard_pb2.SearchResponse]


class ServerSearches:
    def __init__(self, stub_of: Callable[[str], Any]) -> None:
        self._stub_of = stub_of
        self._waiting: dict[str, list[_Waiting]] = {}
        # Servers whose searches come several to a turn: theirs wait for the turn's end. Any other's first
        # search of a turn is sent at once, as a plain Search with nothing added, since on a cluster with one
        # partition per server deferring every search cost 3% of single-query throughput.
        self._gathering: set[str] = set()
        self._sent_at_once: set[str] = set()  # servers whose first search this turn went at once
        self._lone_turns: dict[str, int] = {}  # turns in a row a gathering server got one search only
        self._without_many: set[str] = set()  # servers that answered SearchMany UNIMPLEMENTED
        self._calls: set[asyncio.Task[None]] = set()
        self.calls_sent = 0  # SearchMany calls, for tests and stats
        self.searches_sent = 0  # searches they carried

    def search(self, address: str, request: shard_pb2.SearchRequest, timeout: float, metadata: MetadataPairs) -> Awaitable[shard_pb2.SearchResponse]:
        """The partition's answer: sent now, or with the server's other searches once this turn of the loop ends."""
        loop = asyncio.get_running_loop()
        if address in self._without_many:
            return self._search_alone(address, request, timeout, metadata)
        waiting = self._waiting.get(address)
        if waiting is None:
            waiting = self._waiting[address] = []
            loop.call_soon(self._send, address)
            if address not in self._gathering:
                self._sent_at_once.add(address)
                return self._search_alone(address, request, timeout, metadata)
        answer: asyncio.Future[shard_pb2.SearchResponse] = loop.create_future()
        waiting.append(_Waiting(request, loop.time() + timeout, metadata, answer))
        return answer

    def _send(self, address: str) -> None:
        queued = self._waiting.pop(address, [])
        searches_this_turn = len(queued) + (address in self._sent_at_once)
        self._sent_at_once.discard(address)
        if searches_this_turn > 1 and address not in self._without_many:
            self._gathering.add(address)
            self._lone_turns[address] = 0
        elif address in self._gathering:
            self._lone_turns[address] = turns = self._lone_turns.get(address, 0) + 1
            if turns >= LONE_TURNS_TO_STOP_GATHERING:
                self._gathering.discard(address)
        waiting = [w for w in queued if not w.answer.done()]
        if not waiting:
            return
        if len(waiting) == 1 or address in self._without_many:
            for one in waiting:
                self._start(one.answer, self._lone(address, one))
            return
        task = self._start(None, self._many(address, waiting))
        # Once every caller has stopped waiting, nobody reads the call's answer: cancel it.
        def dropped(_: asyncio.Future[Any]) -> None:
            if all(w.answer.cancelled() for w in waiting):
                task.cancel()
        for one in waiting:
            one.answer.add_done_callback(dropped)

    def _start(self, answer: asyncio.Future[Any] | None, work: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        if answer is not None:
            answer.add_done_callback(lambda f: f.cancelled() and task.cancel())
        return task

    def _search_alone(self, address: str, request: shard_pb2.SearchRequest, timeout: float, metadata: MetadataPairs) -> Awaitable[shard_pb2.SearchResponse]:
        stub = self._stub_of(address)
        return timed_call(SHARD_CALL_SECONDS, ("Search", address), lambda: stub.Search(request, timeout=timeout, metadata=metadata))

    async def _lone(self, address: str, one: _Waiting) -> None:
        timeout = max(one.deadline - asyncio.get_running_loop().time(), 0.0)
        try:
            response = await self._search_alone(address, one.request, timeout, one.metadata)
        except Exception as error:  # noqa: BLE001 - handed to the caller, who decides
            _settle(one.answer, error=error)
        else:
            _settle(one.answer, response)

    async def _many(self, address: str, waiting: list[_Waiting]) -> None:
        stub = self._stub_of(address)
        timeout = max(max(w.deadline for w in waiting) - asyncio.get_running_loop().time(), 0.0)
        request = shard_pb2.SearchManyRequest(searches=[w.request for w in waiting])
        self.calls_sent += 1
        self.searches_sent += len(waiting)
        try:
            response = await timed_call(
                SHARD_CALL_SECONDS, ("SearchMany", address), lambda: stub.SearchMany(request, timeout=timeout, metadata=_joined(waiting))
            )
            if len(response.outcomes) != len(waiting):
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.INTERNAL, Metadata(), Metadata(),
                    f"shard server {address} answered {len(response.outcomes)} searches of a SearchMany of {len(waiting)}",
                )
        except Exception as error:  # noqa: BLE001 - the call's failure is every search's, handed to the callers
            if isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A server from before SearchMany (a rolling upgrade): it gets plain Searches from now on.
                self._without_many.add(address)
                self._gathering.discard(address)
                await asyncio.gather(*(self._lone(address, w) for w in waiting if not w.answer.done()))
                return
            for one in waiting:
                _settle(one.answer, error=error)
            return
        for one, outcome in zip(waiting, response.outcomes):
            if outcome.code == 0:
                _settle(one.answer, outcome.response)
            else:
                _settle(one.answer, error=search_outcomes.error_of(outcome))

    def close(self) -> None:
        for task in list(self._calls):
            task.cancel()


def _joined(waiting: list[_Waiting]) -> MetadataPairs:
    """The request ids of every search the call carries, as one entry (what a coalesced batch sends)."""
    return outgoing_metadata(i for w in waiting for key, value in w.metadata if key == REQUEST_ID_KEY for i in value.split(","))


def _settle(answer: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(value)
