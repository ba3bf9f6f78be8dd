"""The admission share adapts: answers in time widen it slowly, a miss narrows it once per hold."""
from __future__ import annotations

import pytest

from router.admission_share import AdmissionShare


def test_a_miss_narrows_the_share_by_the_backoff_factor_once_per_hold():
    share = AdmissionShare(initial=0.6, backoff=0.8, hold_s=0.2)
    share.missed(now=10.0)
    assert share.value == pytest.approx(0.48)
    share.missed(now=10.1)  # the same slow batch's other members: one cause, one cut
    assert share.value == pytest.approx(0.48)
    share.missed(now=10.3)
    assert share.value == pytest.approx(0.384)


def test_answers_in_time_widen_the_share_up_to_its_ceiling():
    share = AdmissionShare(initial=0.5, step=0.01, ceiling=0.9)
    for _ in range(10):
        share.answered()
    assert share.value == pytest.approx(0.6)
    for _ in range(100):
        share.answered()
    assert share.value == 0.9


def test_misses_never_narrow_the_share_below_its_floor():
    share = AdmissionShare(initial=0.6, floor=0.1, hold_s=0.0)
    for n in range(100):
        share.missed(now=float(n))
    assert share.value == 0.1


def test_at_the_defaults_one_miss_in_150_answers_is_still_too_many_and_narrows_the_share():
    share = AdmissionShare()
    start = share.value
    for n in range(5):  # one miss per 150 answers, each outside the hold
        for _ in range(150):
            share.answered()
        share.missed(now=float(n))
    assert share.value < start
