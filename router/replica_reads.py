"""Choosing which replica answers a read, failing over, and hedging against a slow one.

Choice: each replica's expected wait is (requests outstanding + 1) x its latency, a peak-sensitive moving
average (Finagle's "peak EWMA"): a slow or frozen replica's average jumps at once and decays over
seconds, so it is avoided while it misbehaves and tried again once its record has aged. Reads go to the
replica with the least expected wait.

Hedging: when the chosen replica has not answered after its own recent p95 latency, the same read is
sent to the next replica too; the first answer wins and the other call is cancelled. Hedges are paid
for from a budget that every read adds `hedge_ratio` to (a token bucket), so they add at most that share
of extra requests (5% by default) however slow the cluster gets.

Failover: a replica that answers UNAVAILABLE or CANCELLED, or no longer holds the partition (it was moved
off that server a moment ago, and this router's map is behind), is given up on and the next one asked at once;
one that is not answering by its share of the remaining deadline (when no hedge could be afforded) is
left running and the next one asked too. A replica that misses (fails, or loses the race) has its
estimate doubled for each miss in a row, so it is left alone for longer each time. Any other error is
the caller's and is raised as is. Reads are idempotent, so asking twice is safe.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

import grpc

from quiver.errors import PartitionMissing, refusal_of
from quiver.metrics import HEDGED_READS, REPLICA_FAILOVERS

T = TypeVar("T")

# CANCELLED from a replica is the server's doing, never ours (a call this router gives up on is cancelled
# as a task and not read): a shard server that is stopping answers it to calls that reach it mid-shutdown.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def retryable(error: BaseException) -> bool:
    if not isinstance(error, grpc.aio.AioRpcError):
        return False
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return refusal_of(error.trailing_metadata()) == PartitionMissing.refusal
    return error.code() in _RETRYABLE


_MAX_ESTIMATE_S = 3600.0  # a replica that misses again and again is still tried once its record has aged


@dataclass(frozen=True)
class HedgePolicy:
    hedge_ratio: float = 0.05  # extra requests from hedging, as a share of all reads
    max_tokens: float = 10.0  # the budget's burst
    min_samples: int = 20  # no hedge on a replica whose p95 is not known yet
    min_delay_s: float = 0.002
    decay_s: float = 5.0  # how fast a replica's bad record is forgiven
    window: int = 128  # latencies kept per replica for its p95


@dataclass
class _ReplicaStats:
    outstanding: int = 0
    ewma_s: float = 0.0
    updated: float = 0.0
    recent: deque[float] = field(default_factory=deque)  # bounded by HedgePolicy.window in _of
    p95_s: float | None = None
    misses: int = 0  # attempts in a row that failed or did not answer in time


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class ReplicaReads:
    def __init__(self, policy: HedgePolicy = HedgePolicy(), clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._stats: dict[str, _ReplicaStats] = {}
        self._tokens = 0.0
        self.reads = 0
        self.hedges = 0

    # -- bookkeeping --------------------------------------------------------------------------------

    def _of(self, address: str) -> _ReplicaStats:
        stats = self._stats.get(address)
        if stats is None:
            stats = self._stats[address] = _ReplicaStats(recent=deque(maxlen=self._policy.window))
        return stats

    def expected_wait(self, address: str) -> float:
        stats = self._of(address)
        age = self._clock() - stats.updated
        return (stats.outstanding + 1) * stats.ewma_s * math.exp(-age / self._policy.decay_s)

    def prefers(self, address: str, addresses: list[str]) -> bool:
        """Whether `address` (one of `addresses`) is expected to answer no later than any other of them."""
        wait = self.expected_wait(address)
        return all(wait <= self.expected_wait(other) for other in addresses if other != address)

    def record(self, address: str, elapsed: float, answered: bool, missed: bool = False) -> None:
        """A read made outside `call` (node mode's direct local searches), counted like one of its attempts."""
        self._record(address, elapsed, answered, missed)

    def _record(self, address: str, elapsed: float, answered: bool, missed: bool = False) -> None:
        """One attempt's end. `missed`: it failed, or had not answered when another replica did or the
        deadline came; its latency is then unknown but longer than `elapsed` (for a frozen replica, for
        ever), so its estimate is doubled for each miss in a row: taken at face value, a replica that loses
        every hedge would look barely slower than the winner, and be asked again within a second."""
        stats = self._of(address)
        now = self._clock()
        decayed = stats.ewma_s * math.exp(-(now - stats.updated) / self._policy.decay_s)
        if missed:
            stats.misses += 1
            sample = max(elapsed, decayed, self._policy.min_delay_s) * 2.0 ** min(stats.misses, 16)
        else:
            sample = elapsed
            if answered:
                stats.misses = 0
        # Peak-sensitive: a slower sample is taken at once, a faster one blends in.
        stats.ewma_s = min(sample if sample > decayed else decayed + 0.3 * (sample - decayed), _MAX_ESTIMATE_S)
        stats.updated = now
        if answered:
            stats.recent.append(elapsed)
            if len(stats.recent) >= self._policy.min_samples and len(stats.recent) % 8 == 0:
                ordered = sorted(stats.recent)
                stats.p95_s = ordered[int(0.95 * (len(ordered) - 1))]

    def order(self, addresses: list[str]) -> list[str]:
        """Replicas, least expected wait first (placement order breaks ties)."""
        return sorted(addresses, key=self.expected_wait)

    def _hedge_delay(self, address: str) -> float | None:
        p95 = self._of(address).p95_s
        if p95 is None or self._tokens < 1.0:
            return None
        return max(p95, self._policy.min_delay_s)

    # -- the read -----------------------------------------------------------------------------------

    async def call(
        self, addresses: list[str], call: Callable[[str, float], Awaitable[T]], timeout: float, first_due: float | None = None
    ) -> T:
        """`call(address, budget)` on the best replica, hedged and failed over as above.

        `first_due` (seconds, at most `timeout`): when the read is shared by callers with different
        deadlines (a coalesced search batch), the soonest of them. Attempts share out the time to it, not
        to the latest deadline, or a frozen replica could keep the read past the soonest caller's deadline.
        """
        if not addresses:
            raise _unavailable("no replica of this shard is on a live server")
        self.reads += 1
        self._tokens = min(self._tokens + self._policy.hedge_ratio, self._policy.max_tokens)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first_deadline = loop.time() + min(first_due, timeout) if first_due is not None else deadline
        order = self.order(addresses)
        running: dict[asyncio.Task[T], tuple[str, float]] = {}  # task -> (address, started)
        last_error: grpc.aio.AioRpcError | None = None
        give_up_at = deadline  # when the newest attempt has used its share of the deadline

        def launch() -> None:
            nonlocal give_up_at
            address = order.pop(0)
            now = loop.time()
            # Each attempt may use an equal share of what is left, so one frozen replica cannot use up
            # the whole deadline before the next is asked.
            due = first_deadline if first_deadline > now else deadline
            give_up_at = now + (due - now) / (len(order) + 1)
            self._of(address).outstanding += 1
            running[asyncio.ensure_future(call(address, max(deadline - now, 0.0)))] = (address, now)

        def settle(task: asyncio.Task[T], answered: bool, missed: bool = False) -> None:
            address, started = running.pop(task)
            self._of(address).outstanding -= 1
            self._record(address, loop.time() - started, answered, missed)

        missed_by_running = False  # whether what still runs at the end lost the race or ran out of time
        try:
            launch()
            while running:
                newest_address, newest_start = list(running.values())[-1]
                hedge_delay = self._hedge_delay(newest_address) if order else None
                hedge_at = newest_start + hedge_delay if hedge_delay is not None else math.inf
                act_at = min(deadline, give_up_at if order else deadline, hedge_at)
                done, _ = await asyncio.wait(list(running), timeout=max(act_at - loop.time(), 0.0), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    settle(task, answered=error is None, missed=error is not None)
                    if error is None:
                        missed_by_running = True
                        return task.result()
                    if not retryable(error):
                        raise error
                    last_error = error  # type: ignore[assignment]
                now = loop.time()
                if done:
                    if not running and order:
                        REPLICA_FAILOVERS.inc()
                        launch()  # failover at once
                    continue
                if now >= deadline or not order:
                    missed_by_running = True
                    break
                if now >= hedge_at:
                    self._tokens -= 1.0
                    self.hedges += 1
                    HEDGED_READS.inc()
                else:
                    # The newest attempt used its share: ask the next as well. What runs is left running (it
                    # was sent already; it may yet answer first), so this costs no more than giving up on it.
                    REPLICA_FAILOVERS.inc()
                launch()
        finally:
            for task in list(running):
                task.cancel()
                settle(task, answered=False, missed=missed_by_running)
        if last_error is not None:
            raise last_error
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "no replica answered before the deadline"
        )
