"""Workload pieces as pure functions: filter selectivity, per-call scoring, sweep parsing, the frontier."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.datasets import Dataset, exact_ground_truth
from loadtest.sources import parse_count
from loadtest.sweep import parse_sweep, pareto_flags
from loadtest.workload import FILTER_FIELD, build_workload, selectivity_buckets


def small_dataset(n: int = 2000, n_queries: int = 40, dim: int = 8) -> Dataset:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    return Dataset("small", "l2", base, queries, exact_ground_truth(base, queries, 10, "l2"))


@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01, 0.3])
def test_bucket_zero_selects_the_asked_fraction(selectivity):
    buckets = selectivity_buckets(200_000, selectivity)
    assert (buckets == 0).mean() == pytest.approx(selectivity, rel=0.05)
    assert buckets.min() == 0 and buckets.max() == int((1 - 1e-12) / selectivity)


def test_filtered_truth_is_brute_force_over_the_selected_points_only():
    data = small_dataset()
    workload = build_workload(data, 10, selectivity=0.2, filter_fraction=0.5)
    selected = np.flatnonzero(workload.buckets == 0)
    assert workload.selected_points == len(selected)
    rows = np.flatnonzero(workload.filtered_rows)
    assert 0 < len(rows) < data.queries.shape[0]
    for row in rows:
        distances = ((data.base[selected] - data.queries[row]) ** 2).sum(axis=1)
        assert set(workload.truth(row, True)) == set(selected[np.argsort(distances)[:10]])
    assert workload.metadata([0, 1]) == [{FILTER_FIELD: int(workload.buckets[0])}, {FILTER_FIELD: int(workload.buckets[1])}]


def test_calls_cycle_through_rows_and_are_scored_against_their_own_truth():
    data = small_dataset()
    workload = build_workload(data, 10)
    assert workload.query_of(0) == (0, False) and workload.query_of(len(data.queries) + 3) == (3, False)
    truth = [str(i) for i in data.ground_truth[5, :10]]
    assert workload.hits(5, False, tuple(truth)) == 10
    assert workload.hits(5, False, tuple(truth[:4] + ["x", "-1"] + truth[:4])) == 4  # duplicates count once
    assert build_workload(data, 10).metadata([0]) is None
    with pytest.raises(ValueError):
        build_workload(data, 20)  # ground truth holds 10
    with pytest.raises(ValueError):
        build_workload(data, 10, selectivity=0.001)  # ~2 points selected, fewer than k


def test_parse_sweep_and_counts():
    assert parse_sweep("ef_search=16,32, 64") == ("ef_search", [16, 32, 64])
    assert parse_sweep("nprobe=1") == ("nprobe", [1])
    for bad in ("ef=16", "ef_search", "nprobe=a", "nprobe=0"):
        with pytest.raises(ValueError):
            parse_sweep(bad)
    assert [parse_count(t) for t in ("1000", "1_000", "1e6", "10M", "300k", "1B")] == [1000, 1000, 10**6, 10**7, 300_000, 10**9]
    with pytest.raises(ValueError):
        parse_count("1.5")


def test_pareto_flags_mark_the_points_nothing_beats():
    points = [(0.80, 1000.0), (0.90, 800.0), (0.85, 700.0), (0.99, 200.0), (None, 5000.0), (0.90, 800.0)]
    assert pareto_flags(points) == [True, True, False, True, False, True]


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 1e5)), min_size=1, max_size=30))
def test_the_frontier_holds_the_best_recall_and_the_best_qps(points):
    flags = pareto_flags(points)
    best_recall = max(r for r, _ in points)
    best_qps = max(q for _, q in points)
    assert any(f and r == best_recall for f, (r, _) in zip(flags, points))
    assert any(f and q == best_qps for f, (_, q) in zip(flags, points))
