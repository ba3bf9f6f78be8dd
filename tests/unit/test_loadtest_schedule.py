"""Open-loop arrivals are Poisson at the asked rate, and latency counts from the intended send time.

The drivers run on a virtual clock here: `VirtualTime.sleep` parks a coroutine until the fake clock
reaches its deadline, and `VirtualTime.run` advances the clock to the next deadline whenever every
task is waiting, so a run is exact and instant.
"""
from __future__ import annotations

import asyncio
import heapq
import math
from typing import Any, Awaitable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.drivers import closed_loop, open_loop
from loadtest.latency import LatencyHistogram
from loadtest.outcomes import Tally, error_kind
from loadtest.schedule import paced_offsets, poisson_offsets
from quiver.errors import DeadlineExceeded, QuiverError, Unavailable


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), self._seq, future))
        self._seq += 1
        await future

    async def run(self, coro: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(coro)
        while True:
            for _ in range(20):  # let every runnable task reach its next virtual sleep
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            if not self._timers:
                raise RuntimeError("deadlock: every task waits and no timer is set")
            deadline, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            future.set_result(None)


def single_server(vt: VirtualTime, service: float):
    """A server that answers one call at a time, each taking `service` seconds (FIFO)."""
    lock = asyncio.Lock()

    async def call(slot: int) -> int:
        async with lock:
            await vt.sleep(service)
        return slot

    return call


# -- the Poisson schedule ---------------------------------------------------------------------------


def test_poisson_offsets_have_the_asked_mean_rate_and_exponential_gaps():
    rate, duration = 500.0, 200.0
    offsets = poisson_offsets(rate, duration, np.random.default_rng(42))
    expected = rate * duration
    assert abs(len(offsets) - expected) < 4 * math.sqrt(expected)  # Poisson count: sd = sqrt(mean)
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)  # exponential: CV = 1
    for q in (0.1, 0.5, 0.9, 0.99):  # the empirical CDF follows 1 - exp(-rate * t)
        assert (gaps < -math.log(1 - q) / rate).mean() == pytest.approx(q, abs=0.01)
    per_second = np.bincount(offsets.astype(int), minlength=int(duration))
    assert per_second.var() / per_second.mean() == pytest.approx(1.0, abs=0.25)  # Poisson: variance = mean


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.5, 5000), duration=st.floats(0.01, 5), seed=st.integers(0, 2**32 - 1))
def test_poisson_offsets_are_ascending_within_the_duration(rate, duration, seed):
    offsets = poisson_offsets(rate, duration, np.random.default_rng(seed))
    assert np.all(offsets >= 0) and np.all(offsets < duration)
    assert np.all(np.diff(offsets) > 0)


def test_poisson_offsets_are_deterministic_per_seed_and_reject_bad_input():
    a = poisson_offsets(100, 3, np.random.default_rng(5))
    assert np.array_equal(a, poisson_offsets(100, 3, np.random.default_rng(5)))
    with pytest.raises(ValueError):
        poisson_offsets(0, 1, np.random.default_rng(0))
    assert np.allclose(paced_offsets(4, 1), [0, 0.25, 0.5, 0.75])


# -- latency accounting -----------------------------------------------------------------------------


async def run_open_loop(offsets, service: float, max_inflight: int | None) -> dict[int, float]:
    vt = VirtualTime()
    latencies: dict[int, float] = {}

    def on_done(slot: int, latency: float, outcome: Any) -> None:
        assert outcome == slot
        latencies[slot] = latency

    await vt.run(open_loop(single_server(vt, service), on_done, offsets=offsets, max_inflight=max_inflight,
                           clock=vt.clock, sleep=vt.sleep))
    return latencies


async def test_open_loop_latency_runs_from_the_intended_send_time_so_the_queue_shows():
    # Arrivals every 10 ms at a server that needs 20 ms each: call i is due at 10i ms, is answered
    # at 20(i+1) ms, so its latency is 20 + 10i ms; measured from the send it would look flat.
    offsets = [0.01 * i for i in range(10)]
    latencies = await run_open_loop(offsets, service=0.02, max_inflight=None)
    assert sorted(latencies) == list(range(10))
    for i, latency in latencies.items():
        assert latency == pytest.approx(0.02 + 0.01 * i)


async def test_open_loop_in_flight_limit_delays_sends_but_not_the_latency_origin():
    # With one call in flight the generator itself cannot send on time (coordinated omission in a
    # naive generator); latency still runs from the intended time, so the figures are unchanged.
    offsets = [0.01 * i for i in range(10)]
    limited = await run_open_loop(offsets, 0.02, max_inflight=1)
    assert limited == pytest.approx(await run_open_loop(offsets, 0.02, max_inflight=None))


async def test_open_loop_with_a_fast_server_measures_just_the_service_time():
    latencies = await run_open_loop([0.01 * i for i in range(20)], service=0.001, max_inflight=None)
    assert all(latency == pytest.approx(0.001) for latency in latencies.values())


async def test_closed_loop_workers_send_back_to_back_until_the_duration_is_up():
    vt = VirtualTime()
    done: list[tuple[int, float]] = []

    async def call(slot: int) -> int:
        await vt.sleep(0.01)  # three independent servers: no queue
        return slot

    # Each worker sends at 0, 10, ..., 90 ms; the one due at 100 ms is past the 95 ms duration.
    elapsed = await vt.run(closed_loop(call, lambda s, lat, out: done.append((s, lat)), concurrency=3,
                                       duration=0.095, clock=vt.clock))
    assert len(done) == 30 and sorted(s for s, _ in done) == list(range(30))
    assert all(lat == pytest.approx(0.01) for _, lat in done)
    assert elapsed == pytest.approx(0.1)


async def test_a_failing_call_is_an_outcome_not_the_end_of_the_run():
    vt = VirtualTime()
    outcomes: list[Any] = []

    async def call(slot: int) -> int:
        await vt.sleep(0.001)
        if slot % 2:
            raise Unavailable("shard down")
        return slot

    await vt.run(open_loop(call, lambda s, lat, out: outcomes.append(out), offsets=[0, 0.01, 0.02, 0.03],
                           clock=vt.clock, sleep=vt.sleep))
    assert [isinstance(o, Unavailable) for o in outcomes] == [False, True, False, True]


def test_tally_counts_successes_in_the_histogram_and_errors_by_status_or_class():
    tally = Tally()
    for ms in (1, 2, 3, 4, 100):
        tally.success(ms / 1000)
    for error in (Unavailable("x"), Unavailable("y"), DeadlineExceeded("z"), QuiverError("?"), ValueError("v")):
        tally.failure(error)
    assert tally.completed == tally.latency.count == 5
    assert dict(tally.errors) == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1, "QuiverError": 1, "ValueError": 1}
    assert tally.sent == 10
    assert error_kind(TimeoutError()) == "TimeoutError"


def test_latency_histogram_percentiles_are_within_hdr_precision_and_survive_encoding():
    histogram = LatencyHistogram()
    values = np.random.default_rng(1).lognormal(mean=-6, sigma=1, size=20_000)  # seconds, ~2.5 ms median
    for v in values:
        histogram.record(float(v))
    summary = histogram.summary()
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        assert summary[name] == pytest.approx(np.percentile(values, p) * 1000, rel=0.01)
    assert summary["max"] == pytest.approx(values.max() * 1000, rel=0.001)
    decoded = LatencyHistogram.decode(histogram.encode())
    assert decoded.summary() == summary
    cdf = decoded.cdf()
    assert cdf[-1][1] == pytest.approx(1.0) and all(a[0] < b[0] for a, b in zip(cdf, cdf[1:]))
