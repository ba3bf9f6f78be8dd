"""Budgets of work in flight, shared by the shard server's and the router's admission control.

A request is admitted when it fits in what is left of its budget, or when nothing is held (so one request
larger than the whole budget still runs, alone; message size limits bound it anyway); otherwise it is
refused at once with RESOURCE_EXHAUSTED and a retry pushback, before any of its work is done.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from quiver.errors import ResourceExhausted
from quiver.metrics import refused


class InFlightBudget:
    """One budget: what is held now, and how many requests it refused. Used from one event loop only."""

    def __init__(self, budget: int, name: str = "") -> None:
        self.budget = budget
        self.name = name  # the metric label of its refusals (quiver_admission_refusals_total{budget=...})
        self.used = 0
        self.refused = 0

    @contextlib.contextmanager
    def hold(self, amount: int, refusal: Callable[[], str], retry_after_s: float) -> Iterator[None]:
        if self.used and self.used + amount > self.budget:
            self.refused += 1
            refused(self.name)
            raise ResourceExhausted(refusal(), retry_after_s=retry_after_s)
        self.used += amount
        try:
            yield
        finally:
            self.used -= amount

    def keep(self, amount: int) -> Callable[[], None]:
        """Counts `amount` already admitted (work that outlives its request, still in flight) until the
        returned release is called; never refuses."""
        self.used += amount
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.used -= amount

        return release
