"""Admission control: a shard server takes on only as much work as its budgets allow, and refuses the rest
at once, so overload shows up as fast RESOURCE_EXHAUSTED answers with a retry hint instead of a queue that
grows until memory runs out or every caller's deadline passes.

Two budgets, per server, set in `AdmissionBudgets` (flags of `quiver-shard`):
- bytes of writes accepted but not yet answered (queued for or inside a commit batch): what a burst of
  large upserts would otherwise pile up in memory;
- queries in flight: searches accepted but not yet answered, counted by query vectors, since a batch of
  1,000 queries costs a thousand times one.
A request is admitted as `quiver.admission.InFlightBudget` says.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from quiver.admission import InFlightBudget


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
        self._writes = InFlightBudget(budgets.queued_write_bytes, "shard_queued_write_bytes")
        self._searches = InFlightBudget(budgets.queries_in_flight, "shard_queries_in_flight")

    @property
    def write_bytes(self) -> int:
        return self._writes.used

    @property
    def queries(self) -> int:
        return self._searches.used

    @property
    def refused_writes(self) -> int:
        return self._writes.refused

    @property
    def refused_searches(self) -> int:
        return self._searches.refused

    def write(self, size_bytes: int) -> contextlib.AbstractContextManager[None]:
        return self._writes.hold(size_bytes, lambda: (
            f"{self._server} is overloaded with writes: {self.write_bytes} bytes of writes are queued and this "
            f"one ({size_bytes} bytes) would pass the budget of {self._writes.budget}; retry after a pause, or send "
            "smaller batches"), self.budgets.retry_after_s)

    def search(self, queries: int) -> contextlib.AbstractContextManager[None]:
        return self._searches.hold(queries, lambda: (
            f"{self._server} is overloaded with searches: {self.queries} queries are in flight and these {queries} "
            f"would pass the budget of {self._searches.budget}; retry after a pause (or on another replica)"),
            self.budgets.retry_after_s)
