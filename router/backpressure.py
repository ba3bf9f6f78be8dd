"""Shard servers that refused writes for overload, remembered for as long as they asked callers to wait.

A shard server that refuses a write with RESOURCE_EXHAUSTED sends a retry pushback. Until it has passed,
the router refuses new writes bound for that server at once, before it splits the batch or sends any part
of it: the caller hears "overloaded" in well under a millisecond instead of after a round trip to every
shard, and no part of a batch that one server would refuse is applied on the others. (The same idea as a
circuit breaker, but opened only by the server's own overload answer and held no longer than its hint.)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Backpressure:
    def __init__(self, max_hold_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_hold_s = max_hold_s  # a pushback longer than this is not trusted past it
        self._clock = clock
        self._until: dict[str, float] = {}

    def refused(self, address: str, retry_after_s: float | None) -> None:
        """`address` refused a write and asked for `retry_after_s` before the next."""
        if not retry_after_s or retry_after_s <= 0:
            return
        until = self._clock() + min(retry_after_s, self._max_hold_s)
        self._until[address] = max(until, self._until.get(address, 0.0))

    def holding(self, addresses: Iterable[str]) -> tuple[str, float] | None:
        """The first of `addresses` still inside its pushback, with the seconds left; None when none is."""
        now = self._clock()
        for address in addresses:
            until = self._until.get(address)
            if until is None:
                continue
            if until > now:
                return address, until - now
            del self._until[address]
        return None
