"""What the chaos workload did and saw, kept by the workload and judged by the checker (never by the writer).

Every write is one upsert of one point, so its outcome is one shard's: acknowledged, refused definitely
(the error says nothing was applied, or the request itself was wrong), or uncertain (a timeout, or an error
saying the outcome is unknown). A point's metadata carries the write's sequence number as its version.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

# Codes that mean the request was refused before anything was applied.
_DEFINITE_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def is_definite_refusal(code: grpc.StatusCode, details: str) -> bool:
    """Whether an error says for certain that the write was not applied."""
    if code in _DEFINITE_CODES:
        return True
    return code == grpc.StatusCode.UNAVAILABLE and "nothing was applied" in details and "unknown" not in details


@dataclass
class Write:
    seq: int
    point_id: str
    shard: int
    sent: float  # monotonic
    done: float = 0.0
    outcome: str = ""  # "acked", "refused", "uncertain"
    error: str = ""


@dataclass
class Ledger:
    writes: list[Write] = field(default_factory=list)
    read_violations: list[str] = field(default_factory=list)
    reads_ok: int = 0
    reads_failed: int = 0
    searches: dict[str, list[int]] = field(default_factory=dict)  # fault -> [ok with full coverage, failed]
    search_failures: list[dict[str, str]] = field(default_factory=list)  # fault, wall-clock time, why
    faults: list[dict[str, object]] = field(default_factory=list)
    # Kept as writes are acknowledged, so the reader's check costs O(1) per id, not O(writes) per read.
    newest_acked: dict[str, int] = field(default_factory=dict)  # id -> newest acknowledged version
    acked_seqs: set[int] = field(default_factory=set)

    def acknowledge(self, write: Write) -> None:
        write.outcome = "acked"
        self.acked_seqs.add(write.seq)
        self.newest_acked[write.point_id] = max(self.newest_acked.get(write.point_id, 0), write.seq)

    def acked(self) -> list[Write]:
        return [w for w in self.writes if w.outcome == "acked"]

    def by_outcome(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for write in self.writes:
            counts[write.outcome or "in_flight"] = counts.get(write.outcome or "in_flight", 0) + 1
        return counts

    def first_ack_after(self, shard: int, moment: float) -> float | None:
        """When the first write to `shard` sent after `moment` was acknowledged (for the time to recover)."""
        times = [w.done for w in self.writes if w.shard == shard and w.outcome == "acked" and w.sent >= moment]
        return min(times) if times else None

    def note_search(self, fault: str, failure: str | None) -> None:
        """One search's outcome: `failure` is None for a full answer in time, else what went wrong."""
        counts = self.searches.setdefault(fault, [0, 0])
        counts[0 if failure is None else 1] += 1
        if failure is not None:
            # Wall-clock time, to find the failure in the servers' and router's logs.
            self.search_failures.append({"fault": fault, "at": wall_clock(), "why": failure})


def now() -> float:
    return time.monotonic()


def wall_clock(moment: float | None = None) -> str:
    """UTC time of day to the millisecond of a monotonic `moment` (default: now), to find it in the logs."""
    wall = time.time() - (now() - moment) if moment is not None else time.time()
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
