"""In node mode: a search's partitions that the shard server of this very process holds, searched by one
direct call into it (ShardServicer.search_in_process) instead of one replica read and local call apiece.

Why: in node mode the local stub (quiver.local_calls) already spares the network hop, but each partition
still cost a replica read (a task and an asyncio.wait), a place in ServerSearches, a local call (a task
and a context), a SearchMany outcome and the shard's preparation task: about 1,450 Python calls a query
with three partitions, against the one search each partition's index does (measured: loadtest/results
and the issue 11 notes). Here the router hands the shard server every local partition's request in one
call, on one task, and the inline searches among them never suspend.

What stays as it was: a partition with no replica in this process goes through ReplicaReads as ever; the
local replica is used whenever it is one of the shard's readable replicas and ReplicaReads expects no other to
answer sooner: its latency and refusals go on its record like any replica's, so a local replica that is slow or
refusing lately is passed over for the others until its record decays (a single direct search is not hedged). A local search refused for a reason the
shard's other replicas may not share (UNAVAILABLE, the partition missing here, a deadline: what
ReplicaReads fails over on) goes on to those other replicas through ReplicaReads; any other refusal (the
caller's error, RESOURCE_EXHAUSTED) is that partition's answer, as a remote replica's would be.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from quiver.local_calls import rpc_error
from quiver.logs import REQUEST_ID, incoming_request_id, outgoing_metadata
from quiver.metrics import REPLICA_FAILOVERS, SHARD_CALL_SECONDS, timed_call
from quiver.rpc_guard import status_of
from quiver.v1 import shard_pb2
from router.replica_reads import ReplicaReads, retryable

# Where a partition goes when its local search failed over: the shard's other replicas, or None if it has none.
Elsewhere = Callable[[int], Awaitable[shard_pb2.SearchResponse] | None]


class LocalSearches:
    def __init__(self, address: str, servicer: Any, replica_reads: ReplicaReads) -> None:
        self.address = address
        self._servicer = servicer
        # The local replica's latency and refusals go on its record, so that a slow or refusing one is
        # passed over for another replica as ReplicaReads would (RouterServicer._search_batch asks it).
        self._replica_reads = replica_reads
        self.calls = 0  # direct calls made, for tests and stats
        self.failovers = 0  # partitions sent on to other replicas after a local refusal

    def start(
        self, searches: dict[int, shard_pb2.SearchRequest], timeout: float, request_ids: list[str], elsewhere: Elsewhere,
    ) -> dict[int, asyncio.Future[shard_pb2.SearchResponse]]:
        """Each shard's answer to come, as a future that fails with the grpc.aio.AioRpcError a remote call
        would raise; cancelling every future cancels the search."""
        loop = asyncio.get_running_loop()
        answers: dict[int, asyncio.Future[shard_pb2.SearchResponse]] = {shard: loop.create_future() for shard in searches}
        task = loop.create_task(self._run(searches, timeout, request_ids, answers, elsewhere))

        def dropped(_: asyncio.Future[Any]) -> None:
            if not task.done() and all(a.cancelled() for a in answers.values()):
                task.cancel()

        for answer in answers.values():
            answer.add_done_callback(dropped)
        return answers

    async def _run(
        self, searches: dict[int, shard_pb2.SearchRequest], timeout: float, request_ids: list[str],
        answers: dict[int, asyncio.Future[shard_pb2.SearchResponse]], elsewhere: Elsewhere,
    ) -> None:
        # The shard's logs name every member of a coalesced batch, as the ids a remote call carries would.
        # Read back from the metadata a remote call would carry, as the shard's rpc_guard reads it there.
        REQUEST_ID.set(incoming_request_id(outgoing_metadata(request_ids)))
        self.calls += 1
        shards = list(searches)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            outcomes = await timed_call(SHARD_CALL_SECONDS, ("SearchInProcess", self.address),
                                        lambda: self._servicer.search_in_process([searches[s] for s in shards], timeout))
            elapsed = loop.time() - started
            for shard, outcome in zip(shards, outcomes):
                self._settle(answers[shard], shard, outcome, elapsed, elsewhere)
        except Exception as error:  # noqa: BLE001 - a bug: each partition is refused INTERNAL, none hangs
            failed = rpc_error(*status_of(error, "SearchInProcess"))
            for answer in answers.values():
                if not answer.done():
                    answer.set_exception(failed)

    def _settle(self, answer: asyncio.Future[shard_pb2.SearchResponse], shard: int, outcome: Any, elapsed: float, elsewhere: Elsewhere) -> None:
        if not isinstance(outcome, Exception):
            self._replica_reads.record(self.address, elapsed, answered=True)
            if not answer.done():
                answer.set_result(outcome)
            return
        error = rpc_error(*status_of(outcome, "SearchInProcess"))
        if not retryable(error):
            self._replica_reads.record(self.address, elapsed, answered=False)  # refused for the caller: not slow
            if not answer.done():
                answer.set_exception(error)
            return
        self._replica_reads.record(self.address, elapsed, answered=False, missed=True)
        if answer.done():
            return
        other = elsewhere(shard)
        if other is None:
            answer.set_exception(error)
            return
        self.failovers += 1
        REPLICA_FAILOVERS.inc()
        _forward(asyncio.ensure_future(other), answer)


def _forward(source: asyncio.Future[Any], answer: asyncio.Future[Any]) -> None:
    """`answer` settles as `source` does; cancelling `answer` cancels `source`."""
    def settle(done: asyncio.Future[Any]) -> None:
        if answer.done():
            return
        if done.cancelled():
            answer.cancel()
        elif done.exception() is not None:
            answer.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            answer.set_result(done.result())

    source.add_done_callback(settle)
    answer.add_done_callback(lambda a: a.cancelled() and source.cancel())
