"""The filtered-search planner picks the cheapest strategy by its cost model: exact for few matches,
post-filtering for broad filters, the graph's own filtered search where k is large next to ef; a flat
index always scores exactly; a forced strategy is used whatever it costs."""
from __future__ import annotations

import math

import pytest

from shard.search_cost import ANN_FILTERED, ANN_POST_FILTERED, EXACT_FILTERED, FilterCosts, plan_filtered

COSTS = FilterCosts()
LIVE = 130_000
DIM = 50


def strategy(matches: int, k: int = 10, ef: int = 96, graph: bool = True, force: str = "") -> str:
    return plan_filtered(matches, LIVE, k, ef, DIM, COSTS, graph, force).strategy


def test_few_matches_are_scored_exactly_and_broad_filters_are_post_filtered():
    assert strategy(13) == EXACT_FILTERED  # 0.01%
    assert strategy(1_300) == EXACT_FILTERED  # 1%
    assert strategy(2_600) == EXACT_FILTERED  # 2%: scoring 2,600 rows beats 1,010 candidates on the graph
    assert strategy(13_000) == ANN_POST_FILTERED  # 10%: 304 candidates (ef 96 x sqrt 10) beat scoring 13,000 rows
    assert strategy(26_000) == ANN_POST_FILTERED  # 20%
    assert strategy(65_000) == ANN_POST_FILTERED  # 50%
    assert strategy(LIVE) == ANN_POST_FILTERED


def test_the_callback_search_wins_where_post_filtering_would_fetch_far_more_than_ef():
    # k = 100 at 40%: post-filtering fetches 600 candidates; the callback search visits ~2.3x ef 100 nodes.
    assert strategy(52_000, k=100, ef=100) == ANN_FILTERED


def test_the_choice_is_the_cheapest_estimate_and_reports_it():
    plans = {s: plan_filtered(65_000, LIVE, 10, 96, DIM, COSTS, True, s) for s in (EXACT_FILTERED, ANN_POST_FILTERED, ANN_FILTERED)}
    chosen = plan_filtered(65_000, LIVE, 10, 96, DIM, COSTS, True)
    assert chosen.estimated_cost_us == min(p.estimated_cost_us for p in plans.values())
    assert chosen.matches == 65_000
    post = plans[ANN_POST_FILTERED]
    # ef / sqrt(s) = 136 candidates, more than k * 2 / s + k = 50; hnswlib's list is as long as the results asked.
    assert COSTS.post_filter_k(10, 65_000, LIVE) == 10 * 2 * 2 + 10
    assert post.candidates == post.ef == math.ceil(96 * 2**0.5)


def test_post_filtering_fetches_the_larger_of_oversampled_k_over_selectivity_and_ef_over_root_selectivity():
    assert plan_filtered(13_000, LIVE, 10, 96, DIM, COSTS, True, ANN_POST_FILTERED).candidates == math.ceil(96 * 10**0.5)
    assert plan_filtered(13_000, LIVE, 10, 8, DIM, COSTS, True, ANN_POST_FILTERED).candidates == 10 * 2 * 10 + 10
    # the exponent is the model's: 1 widens the list by 1/s
    wide = FilterCosts(post_filter_ef_exponent=1.0)
    assert plan_filtered(13_000, LIVE, 10, 64, DIM, wide, True, ANN_POST_FILTERED).candidates == 64 * 10
    # k above the cap: never fewer candidates than k
    assert plan_filtered(65_000, LIVE, 5_000, 64, DIM, COSTS, True, ANN_POST_FILTERED).candidates == 5_000


def test_the_callback_search_is_priced_at_hnswlibs_own_list_length_max_ef_k():
    low_ef = plan_filtered(65_000, LIVE, 1_000, 64, DIM, COSTS, True, ANN_FILTERED)
    assert low_ef.ef == 1_000
    assert low_ef.estimated_cost_us == plan_filtered(65_000, LIVE, 1_000, 1_000, DIM, COSTS, True, ANN_FILTERED).estimated_cost_us
    tight = plan_filtered(13, LIVE, 10, 64, DIM, COSTS, True, ANN_POST_FILTERED)
    assert tight.candidates == tight.ef == COSTS.max_post_filter_k  # forced on a tight filter: capped


def test_without_a_graph_every_filter_is_scored_exactly():
    assert strategy(65_000, graph=False) == EXACT_FILTERED
    assert strategy(65_000, graph=False, force=ANN_FILTERED) == EXACT_FILTERED


def test_a_forced_strategy_is_used_and_an_unknown_one_is_refused():
    assert strategy(13, force=ANN_FILTERED) == ANN_FILTERED
    assert strategy(13, force=ANN_POST_FILTERED) == ANN_POST_FILTERED
    with pytest.raises(ValueError, match="unknown filtered search strategy"):
        strategy(13, force="sideways")
