"""What a load phase counts: successful calls and their latencies, failures by kind, partial results.

Only successful calls go into the latency histogram, so `completed == latency.count` always holds;
failures are counted by gRPC status name (the client raises one `quiver.errors` class per status) or,
for anything else, by exception class. Searches are scored as they complete (hits against the exact
top-k, kept apart for filtered and unfiltered calls), so recall costs no memory however long the run;
the returned ids themselves are kept only on request, so a test can recompute recall independently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from loadtest.latency import LatencyHistogram
from quiver.errors import GRPC_CODES, QuiverError


def error_kind(error: BaseException) -> str:
    """'UNAVAILABLE', 'DEADLINE_EXCEEDED', ... for Quiver errors; the class name for anything else."""
    if isinstance(error, QuiverError):
        for cls in type(error).__mro__:
            code = GRPC_CODES.get(cls)  # type: ignore[arg-type]
            if code is not None:
                return str(code.name)
    return type(error).__name__


@dataclass(frozen=True)
class Returned:
    """The ids one search call returned for query row `row` (with or without the workload filter)."""

    row: int
    filtered: bool
    ids: tuple[str, ...]


@dataclass
class Tally:
    keep_ids: bool = False
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    completed: int = 0
    items: int = 0  # points written, for write streams (a call carries a batch)
    partial: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Per "filtered" / "unfiltered": true neighbours found, and calls scored.
    recall_hits: Counter[str] = field(default_factory=Counter)
    recall_calls: Counter[str] = field(default_factory=Counter)
    returned: list[Returned] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def sent(self) -> int:
        return self.completed + self.error_count

    def success(
        self, latency_s: float, *, items: int = 1, partial: bool = False, returned: Returned | None = None,
        hits: int | None = None,
    ) -> None:
        self.latency.record(latency_s)
        self.completed += 1
        self.items += items
        self.partial += int(partial)
        if returned is not None:
            if hits is not None:
                key = "filtered" if returned.filtered else "unfiltered"
                self.recall_hits[key] += hits
                self.recall_calls[key] += 1
            if self.keep_ids:
                self.returned.append(returned)

    def failure(self, error: BaseException) -> None:
        self.errors[error_kind(error)] += 1
