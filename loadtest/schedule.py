"""Send schedules for open-loop load: when each request is *meant* to go out.

An open-loop generator decides send times in advance, independent of how fast answers come back, so a
slow server cannot slow the arrivals down and hide its queue (coordinated omission). Poisson arrivals
(independent exponential gaps) are the usual model of many independent clients; a fixed pace suits a
steady write stream.
"""
from __future__ import annotations

import math

import numpy as np


def poisson_offsets(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration) of a Poisson process of `rate` per second, ascending, float64."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    expected = rate * duration
    # Enough gaps that running short is a >6 sigma event; top up in the rare case it happens anyway.
    gaps = rng.exponential(1.0 / rate, size=int(expected + 6 * math.sqrt(expected) + 16))
    times = np.cumsum(gaps)
    while times[-1] < duration:
        more = np.cumsum(rng.exponential(1.0 / rate, size=len(times))) + times[-1]
        times = np.concatenate([times, more])
    return times[times < duration]


def paced_offsets(rate: float, duration: float) -> np.ndarray:
    """Evenly spaced send times in [0, duration) at `rate` per second."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    return np.arange(0.0, duration, 1.0 / rate)
