"""The batch-time model that deadline-aware admission and batch sizing price searches with."""
from __future__ import annotations

import pytest

from router.batch_cost import BatchCostModel


def test_two_batch_sizes_recover_the_fixed_and_per_query_cost():
    model = BatchCostModel()
    for n in range(20):
        queries = 16 if n % 2 else 64
        model.observe(queries, 0.011 + 0.0005 * queries, now=n)
    fixed, per_query = model.coefficients()
    assert fixed == pytest.approx(0.011, rel=1e-6) and per_query == pytest.approx(0.0005, rel=1e-6)
    assert model.predict(256, now=20) == pytest.approx(0.011 + 0.0005 * 256, rel=1e-6)


def test_recent_batches_outweigh_old_ones():
    model = BatchCostModel(decay=0.8)
    for n in range(30):
        model.observe(32, 0.100, now=n)  # a slow spell
    for n in range(30, 60):
        model.observe(32, 0.010, now=n)  # then fast again
    assert model.predict(32, now=60) == pytest.approx(0.010, rel=0.02)


def test_one_batch_size_only_prices_every_size_as_the_one_observed():
    model = BatchCostModel()
    for n in range(5):
        model.observe(32, 0.032, now=n)
    assert model.coefficients() == (pytest.approx(0.032), 0.0)
    assert model.predict(64, now=5) == pytest.approx(0.032)


def test_larger_batches_looking_faster_price_every_size_alike():
    model = BatchCostModel()
    model.observe(16, 0.050, now=0)
    model.observe(64, 0.030, now=1)
    fixed, per_query = model.coefficients()
    assert per_query == 0.0 and 0.030 < fixed < 0.050


def test_a_fit_below_zero_at_no_queries_goes_through_the_origin_instead():
    model = BatchCostModel()
    model.observe(10, 0.001, now=0)
    model.observe(100, 0.100, now=1)
    fixed, per_query = model.coefficients()
    assert fixed == 0.0 and per_query > 0
    assert model.predict(10, now=1) > 0


def test_an_estimate_older_than_its_max_age_is_not_used():
    model = BatchCostModel(max_age_s=5.0)
    assert model.predict(10, now=0) is None
    model.observe(10, 0.01, now=100.0)
    assert model.predict(10, now=104.0) is not None
    assert model.predict(10, now=105.5) is None




def test_the_batch_count_restarts_after_a_quiet_spell():
    model = BatchCostModel(max_age_s=5.0)
    for n in range(4):
        model.observe(8, 0.01, now=float(n))
    assert model.batches == 4
    model.observe(8, 0.01, now=20.0)
    assert model.batches == 1
