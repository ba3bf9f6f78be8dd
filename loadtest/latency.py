"""Latency recording in an HDR histogram (the `hdrhistogram` package).

Values are microseconds, 1 µs to one hour, 3 significant digits: every percentile read back is within
0.1% of the recorded value, whatever the spread, and memory stays a few tens of kB for any run length.
The histogram travels in reports in HdrHistogram's own compressed base64 form, so charts and merges
can be made later from the JSON alone.
"""
from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
# Reported percentiles and their JSON names.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


class LatencyHistogram:
    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self._h = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record(self, seconds: float) -> None:
        self._h.record_value(min(max(LOWEST_US, round(seconds * 1e6)), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return self._h.get_value_at_percentile(percentile) / 1000.0

    def summary(self) -> dict[str, float | int | None]:
        """count, mean, the PERCENTILES and max in milliseconds (None when nothing was recorded)."""
        if self.count == 0:
            return {"count": 0, "mean": None, **{name: None for name, _ in PERCENTILES}, "max": None}
        return {
            "count": self.count,
            "mean": self._h.get_mean_value() / 1000.0,
            **{name: self.percentile_ms(p) for name, p in PERCENTILES},
            "max": self._h.get_max_value() / 1000.0,
        }

    def cdf(self) -> list[tuple[float, float]]:
        """(latency ms, fraction of calls at or below it) at every recorded value, ascending."""
        return [
            (step.value_iterated_to / 1000.0, step.percentile / 100.0)
            for step in self._h.get_recorded_iterator()
        ]

    def encode(self) -> str:
        return self._h.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str) -> "LatencyHistogram":
        return cls(HdrHistogram.decode(encoded.encode("ascii")))
