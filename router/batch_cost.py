"""How long a coalesced search batch takes, as a function of how many queries it carries.

Deadline-aware admission and batch sizing need one number: when would a batch of q queries sent now be
answered. A batch's time has a fixed part (the calls to every shard, the merge) and a part that grows with
its queries (the index's own work), so it is modelled as `fixed_s + per_query_s * q`, fitted by least
squares over the recent batches with exponentially decaying weights: under changing load the estimate
follows the last several batches, not the whole run. A single average per batch (what came before)
priced a batch of 16 queries like one of 256, so a search behind a short batch was refused and one behind
a long batch admitted to miss its deadline.

When every recent batch carried the same number of queries there is no slope to fit; every size is then
priced as the size observed. That underestimates larger batches, so admission errs on admitting (and a
larger batch, once sent, is measured and gives the fit its slope); pricing them in proportion instead
would refuse a few single-query searches queued together as if each were a batch of its own, when most
of a small batch's time is the fixed part. An estimate older than `max_age_s` is not used: one measured before a
quiet spell could refuse what the shards now serve at once. The fit is a mean, so about half the
batches take longer; the margin for that is the admission share (`router.admission_share`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchCostModel:
    decay: float = 0.8  # weight left to the earlier batches at each new one (about the last 5-10 count)
    max_age_s: float = 5.0
    _weight: float = 0.0
    _q: float = 0.0
    _t: float = 0.0
    _qq: float = 0.0
    _qt: float = 0.0
    _sampled_at: float | None = None
    batches: int = 0  # observed since the estimate last went stale

    def observe(self, queries: int, seconds: float, now: float) -> None:
        """A batch of `queries` took `seconds` (measured at `now`)."""
        if queries <= 0 or seconds < 0:
            return
        if self._sampled_at is not None and not self.fresh(now):
            self.batches = 0  # a fresh start after a quiet spell: the stale batches are not evidence
        self.batches += 1
        keep = self.decay
        self._weight = self._weight * keep + 1.0
        self._q = self._q * keep + queries
        self._t = self._t * keep + seconds
        self._qq = self._qq * keep + queries * queries
        self._qt = self._qt * keep + queries * seconds
        self._sampled_at = now

    def coefficients(self) -> tuple[float, float] | None:
        """(fixed_s, per_query_s) of the fit, or None before any batch."""
        if self._weight <= 0:
            return None
        mean_q, mean_t = self._q / self._weight, self._t / self._weight
        variance = self._qq / self._weight - mean_q * mean_q
        if variance <= (0.05 * mean_q) ** 2:  # one batch size only: no slope to fit
            return mean_t, 0.0
        slope = (self._qt / self._weight - mean_q * mean_t) / variance
        if slope <= 0:  # noise (or a load change) made larger batches look faster: price them all alike
            return mean_t, 0.0
        fixed = mean_t - slope * mean_q
        if fixed < 0:  # through the origin instead: a batch never takes less than nothing
            return 0.0, self._qt / self._qq
        return fixed, slope

    def fresh(self, now: float) -> bool:
        """Whether a batch was measured within `max_age_s` of `now`."""
        return self._sampled_at is not None and now - self._sampled_at <= self.max_age_s

    def predict(self, queries: int, now: float) -> float | None:
        """Seconds a batch of `queries` sent at `now` would take; None with no estimate recent enough."""
        if not self.fresh(now):
            return None
        coefficients = self.coefficients()
        if coefficients is None:
            return None
        fixed, per_query = coefficients
        return fixed + per_query * queries

