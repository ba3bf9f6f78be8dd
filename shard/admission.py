"""Admission control: a shard server takes on only as much work as its budgets allow, and refuses the rest
at once, so overload shows up as fast RESOURCE_EXHAUSTED answers with a retry hint instead of a queue that
grows until memory runs out or every caller's deadline passes.

Two budgets, per server, set in `AdmissionBudgets` (flags of `quiver-shard`):
- bytes of writes accepted but not yet answered (queued for or inside a commit batch): what a burst of
  large upserts would otherwise pile up in memory;
- queries in flight: searches accepted but not yet answered, counted by query vectors, since a batch of
  1,000 queries costs a thousand times one.
A request is admitted when it fits in what is left, or when nothing of its kind is in flight (so one
request larger than the whole budget still runs, alone; message size limits bound it anyway).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from quiver.errors import ResourceExhausted


@dataclass(frozen=True)
class AdmissionBudgets:
    queued_write_bytes: int = 256 * 2**20
    queries_in_flight: int = 4096
    retry_after_s: float = 0.1  # the retry pushback sent with a refusal


class Admission:
    """Counts what is in flight; used from the event loop only (no locking needed)."""

    def __init__(self, budgets: AdmissionBudgets, server: str = "this shard server") -> None:
        self.budgets = budgets
        self._server = server
        self.write_bytes = 0
        self.queries = 0
        self.refused_writes = 0
        self.refused_searches = 0

    @contextlib.contextmanager
    def write(self, size_bytes: int) -> Iterator[None]:
        budget = self.budgets.queued_write_bytes
        if self.write_bytes and self.write_bytes + size_bytes > budget:
            self.refused_writes += 1
            raise ResourceExhausted(
                f"{self._server} is overloaded with writes: {self.write_bytes} bytes of writes are queued and this "
                f"one ({size_bytes} bytes) would pass the budget of {budget}; retry after a pause, or send smaller batches",
                retry_after_s=self.budgets.retry_after_s,
            )
        self.write_bytes += size_bytes
        try:
            yield
        finally:
            self.write_bytes -= size_bytes

    @contextlib.contextmanager
    def search(self, queries: int) -> Iterator[None]:
        budget = self.budgets.queries_in_flight
        if self.queries and self.queries + queries > budget:
            self.refused_searches += 1
            raise ResourceExhausted(
                f"{self._server} is overloaded with searches: {self.queries} queries are in flight and these {queries} "
                f"would pass the budget of {budget}; retry after a pause (or on another replica)",
                retry_after_s=self.budgets.retry_after_s,
            )
        self.queries += queries
        try:
            yield
        finally:
            self.queries -= queries
