"""Closed-loop and open-loop drivers: when calls are made and from when their latency counts.

Both are generic over `call(slot)` (one request; `slot` numbers the calls 0, 1, 2, ...) and report
each call once through `on_done(slot, latency_s, outcome)`, where outcome is the call's result or the
exception it raised. The clock and sleep are parameters so the accounting can be tested with a fake
clock; by default they are `time.perf_counter` and `asyncio.sleep`.

- Closed loop: C workers each send, wait for the answer, send the next, until the duration is up.
  Latency runs from the actual send. Throughput is whatever the server lets C clients reach.
- Open loop: calls are due at start + offsets[slot] (a Poisson schedule, say), whatever happens to
  earlier calls. Latency runs from that *intended* time, so when the server (or this generator,
  or a full in-flight limit) falls behind, the wait before sending counts too, and a stall shows up as
  the queue it causes instead of as a handful of slow calls (coordinated omission, as Gil Tene put it).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Awaitable, Callable, Sequence

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
Call = Callable[[int], Awaitable[Any]]
OnDone = Callable[[int, float, Any], None]


async def _attempt(call: Call, slot: int) -> Any:
    try:
        return await call(slot)
    except Exception as error:  # a failed call is an outcome to count, not the end of the run
        return error


async def closed_loop(
    call: Call, on_done: OnDone, *, concurrency: int, duration: float, clock: Clock = time.perf_counter
) -> float:
    """Run until `duration` has passed (calls in flight then finish); returns the elapsed seconds."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    start = clock()
    deadline = start + duration
    slots = itertools.count()

    async def worker() -> None:
        while clock() < deadline:
            slot = next(slots)
            sent = clock()
            outcome = await _attempt(call, slot)
            on_done(slot, clock() - sent, outcome)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return clock() - start


async def open_loop(
    call: Call,
    on_done: OnDone,
    *,
    offsets: Sequence[float],
    max_inflight: int | None = None,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
) -> float:
    """Start call `slot` at start + offsets[slot]; wait for all; returns the elapsed seconds.

    With `max_inflight`, a call that would exceed it waits for a free place; its latency still runs
    from its intended time, so the limit bounds this process's memory without hiding the backlog.
    """
    start = clock()
    limit = asyncio.Semaphore(max_inflight) if max_inflight else None
    pending: set[asyncio.Task[None]] = set()

    async def one(slot: int, intended: float) -> None:
        try:
            outcome = await _attempt(call, slot)
        finally:
            if limit is not None:
                limit.release()
        on_done(slot, clock() - intended, outcome)

    for slot, offset in enumerate(offsets):
        intended = start + float(offset)
        wait = intended - clock()
        if wait > 0:
            await sleep(wait)
        if limit is not None:
            await limit.acquire()
        task = asyncio.create_task(one(slot, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))
    return clock() - start
