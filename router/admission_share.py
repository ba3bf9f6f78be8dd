"""How much of a search's budget its expected answer time may fill and still be admitted, learnt from
what happened to the searches admitted before it.

The router's estimate of when a queued search will be answered (`router.batch_cost`) sees only the
shards' batch times; it misses what it cannot see: the router's own event-loop lag under a flood of
refusals, a burst of writes slowing the shards mid-batch, the merge and the answer's trip back. A fixed
share of the budget is then either too generous under a mixed load (admitted searches miss their
deadlines) or too strict under a steady one (searches refused that would have made it). So the share is
adjusted like a congestion window (additive increase, multiplicative decrease, as TCP and Netflix's
concurrency-limits do): every admitted search answered in time widens it a little, one that missed its
deadline narrows it by a factor, at most once per `hold_s` (searches of one slow batch miss together:
one cause, one cut). At equilibrium about `step / (share * (1 - backoff))` misses per answer remain,
under one in a hundred at any share above 0.15 with the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdmissionShare:
    initial: float = 0.9
    floor: float = 0.1  # never refuse everything: admitted searches are what measures the shards again
    ceiling: float = 0.9
    backoff: float = 0.8
    step: float = 0.0003
    hold_s: float = 0.2
    value: float = field(init=False)
    _last_cut: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.value = min(max(self.initial, self.floor), self.ceiling)

    def answered(self) -> None:
        """An admitted search was answered within its deadline."""
        self.value = min(self.ceiling, self.value + self.step)

    def missed(self, now: float) -> None:
        """An admitted search missed its deadline (failed in the queue, or its shards answered too late)."""
        if now - self._last_cut < self.hold_s:
            return
        self._last_cut = now
        self.value = max(self.floor, self.value * self.backoff)
