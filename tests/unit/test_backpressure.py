"""Backpressure: which shard servers the router holds writes back from, and for how long."""
from __future__ import annotations

import pytest

from router.backpressure import Backpressure


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_server_is_held_for_its_pushback_then_released():
    clock = Clock()
    pressure = Backpressure(max_hold_s=1.0, clock=clock)
    pressure.refused("a:1", 0.3)
    assert pressure.holding(["b:2", "a:1"]) == ("a:1", pytest.approx(0.3))
    clock.now += 0.29
    assert pressure.holding(["a:1"]) is not None
    clock.now += 0.02
    assert pressure.holding(["a:1"]) is None


def test_a_pushback_longer_than_the_cap_is_held_only_for_the_cap():
    clock = Clock()
    pressure = Backpressure(max_hold_s=1.0, clock=clock)
    pressure.refused("a:1", 60.0)
    assert pressure.holding(["a:1"]) == ("a:1", pytest.approx(1.0))
    clock.now += 1.01
    assert pressure.holding(["a:1"]) is None


def test_a_shorter_later_pushback_does_not_cut_a_longer_one_short():
    clock = Clock()
    pressure = Backpressure(max_hold_s=1.0, clock=clock)
    pressure.refused("a:1", 0.8)
    pressure.refused("a:1", 0.1)
    clock.now += 0.5
    assert pressure.holding(["a:1"]) is not None


def test_no_or_a_non_positive_hint_holds_nothing():
    pressure = Backpressure(clock=Clock())
    pressure.refused("a:1", None)
    pressure.refused("b:2", 0.0)
    pressure.refused("c:3", -1.0)
    assert pressure.holding(["a:1", "b:2", "c:3"]) is None


def test_only_the_named_servers_are_asked_about():
    pressure = Backpressure(clock=Clock())
    pressure.refused("a:1", 0.5)
    assert pressure.holding(["b:2", "c:3"]) is None
    assert pressure.holding([]) is None
