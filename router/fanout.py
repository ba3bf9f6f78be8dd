"""Calling many shards at once under one deadline, collecting a result or a failure from each.

Each per-shard call gives an `Outcome` and never raises, so one slow or dead shard cannot hide the
others' answers. A shard that has not answered by the deadline is recorded as DEADLINE_EXCEEDED and its
call is cancelled, as are all calls when the caller cancels. Whether the gathered outcomes are good
enough is decided separately (`require_coverage`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

import grpc

from quiver.errors import ERRORS_BY_CODE, STALE_PLACEMENT_REFUSALS, ResourceExhausted, Unavailable, refusal_of, retry_pushback_s

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    shard: int
    value: T | None = None
    code: grpc.StatusCode | None = None
    message: str = ""
    retry_after_s: float | None = None  # the shard's retry pushback, passed on to the caller
    refusal: str = ""  # the shard's marked reason for refusing the call (quiver.errors.REFUSAL_KEY)

    @property
    def ok(self) -> bool:
        return self.code is None


class Gather(Generic[T]):
    """Per-shard calls started at once, whose outcomes can be read at several moments.

    `wait(timeout)` returns every shard's outcome as of when it returns: the answer or failure of each
    call that finished, DEADLINE_EXCEEDED for the others, which go on running until `cancel()`. So
    callers with different deadlines can share one fan-out and each read it at its own deadline.
    """

    def __init__(self, calls: dict[int, Callable[[], Awaitable[T]]], started: dict[int, asyncio.Future[T]] | None = None) -> None:
        """`started`: shards whose answers are already on their way (futures), read like the calls' own."""
        tasks = {shard: asyncio.ensure_future(call()) for shard, call in calls.items()} | (started or {})
        self._tasks = dict(sorted(tasks.items()))

    @property
    def finished(self) -> bool:
        return all(task.done() for task in self._tasks.values())

    async def wait(self, timeout: float | None, until: Callable[[Outcome[T]], bool] | None = None) -> list[Outcome[T]]:
        """Every shard's outcome once all calls finished or `timeout` passed, or as soon as one finished
        call's outcome satisfies `until` (the others then read DEADLINE_EXCEEDED and go on running)."""
        running = [task for task in self._tasks.values() if not task.done()]
        if until is not None and any(until(self._outcome(shard, task)) for shard, task in self._tasks.items() if task.done()):
            running = []
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        shard_of = {task: shard for shard, task in self._tasks.items()}
        while running and (end is None or end > loop.time()):
            left = None if end is None else end - loop.time()
            if until is None:
                await asyncio.wait(running, timeout=left)
                break
            done, pending = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if any(until(self._outcome(shard_of[task], task)) for task in done):
                break
            running = list(pending)
        return [self._outcome(shard, task) for shard, task in self._tasks.items()]

    @staticmethod
    def _outcome(shard: int, task: asyncio.Future[T]) -> Outcome[T]:
        if not task.done():
            return Outcome(shard, code=grpc.StatusCode.DEADLINE_EXCEEDED, message="no answer before the deadline")
        if task.cancelled():
            return Outcome(shard, code=grpc.StatusCode.CANCELLED, message="the call was cancelled")
        error = task.exception()
        if isinstance(error, grpc.aio.AioRpcError):
            trailing = error.trailing_metadata()
            return Outcome(shard, code=error.code(), message=error.details() or "", retry_after_s=retry_pushback_s(trailing), refusal=refusal_of(trailing))
        if error is not None:
            raise error  # a bug, not a shard's answer: the caller's guard reports it
        return Outcome(shard, value=task.result())

    def cancel(self) -> None:
        for task in self._tasks.values():
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def fan_out(calls: dict[int, Callable[[], Awaitable[T]]], timeout: float | None) -> list[Outcome[T]]:
    """Runs every call concurrently; returns one outcome per shard, in shard order."""
    gather = Gather(calls)
    try:
        return await gather.wait(timeout)
    finally:
        gather.cancel()


def require_coverage(outcomes: list[Outcome[Any]], allow_partial: bool, what: str) -> None:
    """Raises Unavailable when a shard failed and partial results are not acceptable (or none answered)."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return
    if allow_partial and len(failed) < len(outcomes):
        return
    detail = "; ".join(f"shard {o.shard}: {o.code.name if o.code else '?'} {o.message}" for o in failed)
    if any(o.refusal in STALE_PLACEMENT_REFUSALS for o in failed):
        detail += "; this router's shard map was behind the cluster's for a moment, nothing was applied there"
    # A shard that used the whole deadline without answering would do so again on a retry in this deadline.
    timed_out = any(o.code == grpc.StatusCode.DEADLINE_EXCEEDED for o in failed)
    raise Unavailable(f"{what}: {len(failed)} of {len(outcomes)} shards did not answer ({detail})", retry_now=not timed_out)


# Codes that mean "the request is wrong", not "a shard is missing": passed through to the caller as is.
_CALLER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def raise_caller_errors(outcomes: list[Outcome[Any]]) -> None:
    for outcome in outcomes:
        if outcome.refusal in STALE_PLACEMENT_REFUSALS:
            continue  # not the caller's: left to require_coverage, which answers UNAVAILABLE (retried)
        if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise ResourceExhausted(f"shard {outcome.shard}: {outcome.message}", retry_after_s=outcome.retry_after_s)
        if outcome.code in _CALLER_CODES:
            raise ERRORS_BY_CODE[outcome.code](f"shard {outcome.shard}: {outcome.message}")  # type: ignore[index]
