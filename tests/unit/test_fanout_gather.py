"""Gather: one outcome per shard at each read, whatever the calls do: an answer, a gRPC error with its
code, message and retry pushback, no answer yet (DEADLINE_EXCEEDED), or a cancelled call (CANCELLED)."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from quiver.errors import Unavailable
from router.fanout import Gather, fan_out, require_coverage


def rpc_error(code: grpc.StatusCode, details: str, trailing: tuple = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


async def test_each_shard_gets_its_own_outcome_and_unfinished_calls_read_as_deadline_exceeded() -> None:
    never = asyncio.Event()

    async def answer() -> str:
        return "ok"

    async def refuse() -> str:
        raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "disk full", (("grpc-retry-pushback-ms", "250"),))

    async def hang() -> str:
        await never.wait()
        return "late"

    async def cancelled() -> str:
        raise asyncio.CancelledError

    gather = Gather({0: answer, 1: refuse, 2: hang, 3: cancelled})
    outcomes = await gather.wait(0.05)
    assert [o.shard for o in outcomes] == [0, 1, 2, 3]
    assert (outcomes[0].ok, outcomes[0].value) == (True, "ok")
    assert (outcomes[1].code, outcomes[1].message, outcomes[1].retry_after_s) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "disk full", 0.25)
    assert (outcomes[2].code, outcomes[2].message) == (grpc.StatusCode.DEADLINE_EXCEEDED, "no answer before the deadline")
    assert (outcomes[3].code, outcomes[3].message) == (grpc.StatusCode.CANCELLED, "the call was cancelled")
    assert not gather.finished
    never.set()  # a later read sees the late answer: callers with later deadlines share one gather
    again = await gather.wait(1.0)
    assert (again[2].ok, again[2].value) == (True, "late") and gather.finished
    gather.cancel()


async def test_a_read_with_no_time_left_does_not_wait_and_cancel_stops_what_still_runs() -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    gather = Gather({0: slow})
    await started.wait()
    outcomes = await asyncio.wait_for(gather.wait(0), timeout=1)  # returns at once
    assert outcomes[0].code == grpc.StatusCode.DEADLINE_EXCEEDED
    gather.cancel()
    await asyncio.sleep(0)
    assert (await gather.wait(None))[0].code == grpc.StatusCode.CANCELLED


async def test_fan_out_returns_at_its_timeout_with_the_missing_shards_named_by_require_coverage() -> None:
    async def answer() -> str:
        return "ok"

    async def hang() -> str:
        await asyncio.sleep(30)
        return "never"

    outcomes = await asyncio.wait_for(fan_out({0: answer, 1: hang}, 0.05), timeout=5)
    with pytest.raises(Unavailable, match=r"search: 1 of 2 shards did not answer \(shard 1: DEADLINE_EXCEEDED no answer before the deadline\)"):
        require_coverage(outcomes, False, "search")
    require_coverage(outcomes, True, "search")  # partial is acceptable when asked for
