"""How a filtered search is run, chosen by its estimated cost, not by a fixed fraction of the partition.

Three ways to find the top k among the m points a filter allows, out of n live points in d dimensions:
- exact_filtered: score the m allowed vectors exactly (BLAS over the raw vector arena):
  cost ~ fixed + m * d * exact_per_point_dim. Exact recall; cheap when m is small.
- ann_post_filtered: an unfiltered ANN search for k' = max(k * oversample / s, ef / sqrt(s)) candidates
  (s = m / n, the filter's selectivity), keeping the allowed ones. hnswlib searches with max(ef, k'), so
  asking for k' results is what widens the candidate list, and the index's ef (global state in hnswlib,
  switched only when no search is running) is left alone. The list must be wider than the one that makes
  the unfiltered top k as good, or the filtered recall falls below the unfiltered one's (0.947 against
  0.958 at s = 0.5 with ef left as it was); 1/s times wider over-delivers (0.982 at 50% to 0.998 at 10%,
  against 0.957 unfiltered, at half the speed at 10%), 1/sqrt(s) holds it (0.967-0.989 at 50%-5%, and
  0.74-0.84x the unfiltered speed; `bench_peers`, 2026-12-06): cost ~ ann(k'). No per-node callback; a
  query that keeps fewer than k is completed exactly.
- ann_filtered: hnswlib's filtered search, which calls back into Python (and takes the GIL) for every node
  it visits and must visit about ef / s of them to find ef allowed ones:
  cost ~ ann(ef) * s ** -callback_exponent.
where ann(ef) = fixed + ef * d * ann_per_ef_dim, and ef is never less than k (hnswlib's own rule).

The constants are microseconds measured on the 2-core development machine with GloVe-50 (HNSW m=16,
130k points per partition, one query, one thread, and the exact one also served; `python -m
loadtest.bench_peers` section "filtered" re-measures the result). Only their ratios decide a choice, so a
faster machine scales them all alike; what is reported in the response (`estimated_cost_us`) is this
machine's estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

EXACT_FILTERED = "exact_filtered"
ANN_POST_FILTERED = "ann_post_filtered"
ANN_FILTERED = "ann_filtered"
STRATEGIES = (EXACT_FILTERED, ANN_POST_FILTERED, ANN_FILTERED)


@dataclass(frozen=True)
class FilterCosts:
    fixed_us: float = 40.0
    # A query is scored in place over the allowed rows (faiss, no GIL, no gather; shard.indexes.arena), plus
    # the mask's label list: 0.0009-0.0011 one query at a time in process at 1%-10% of 130k 50-d rows
    # (2026-12-07; 0.0018 when the rows were gathered first), with headroom for partitions sharing cores. It
    # puts the crossover with ann_post_filtered near 6.5% there, where both measure ~470 us at 10% and exact
    # is 1.85x cheaper at 5%.
    exact_per_point_dim_us: float = 0.0015
    ann_per_ef_dim_us: float = 0.045
    callback_exponent: float = 0.93
    oversample: float = 2.0  # candidates fetched per match expected in the top k
    # ann_post_filtered widens the candidate list to ef / s ** this: 1 fetches 1/s times the list (recall
    # 0.982-0.998 against 0.957 unfiltered at 50%-10%: paid for in speed); 0.5 widens it by 1/sqrt(s).
    post_filter_ef_exponent: float = 0.5
    max_post_filter_k: int = 4096  # past this many candidates, post-filtering is not considered

    def exact(self, matches: int, dim: int) -> float:
        return self.fixed_us + matches * dim * self.exact_per_point_dim_us

    def ann(self, ef: int, dim: int) -> float:
        return self.fixed_us + ef * dim * self.ann_per_ef_dim_us

    def post_filter_k(self, k: int, matches: int, live: int) -> int:
        """Unfiltered candidates to fetch so that about `oversample` times k of them pass the filter."""
        selectivity = matches / max(live, 1)
        return min(live, math.ceil(k * self.oversample / max(selectivity, 1e-12)) + k)


@dataclass(frozen=True)
class FilterPlan:
    strategy: str
    estimated_cost_us: float  # per query, on the reference machine
    matches: int
    candidates: int = 0  # ann_post_filtered: how many unfiltered results are fetched (hnswlib's ef for it)
    ef: int = 0  # the candidate list the ANN strategies search with: max(ef, k), or `candidates`


def plan_filtered(
    matches: int, live: int, k: int, ef: int, dim: int, costs: FilterCosts, graph: bool, force: str = "",
) -> FilterPlan:
    """The cheapest way to search `matches` allowed points of `live`; `graph` says whether an ANN graph
    is there to use (a flat or untrained index only scores exactly). `force` names a strategy to use
    whatever it costs (tests, and an operator checking one path's recall)."""
    exact = FilterPlan(EXACT_FILTERED, costs.exact(matches, dim), matches)
    if not graph:
        return exact
    options = [exact]
    ef = max(ef, k)  # hnswlib's candidate list is never shorter than k
    post_k = costs.post_filter_k(k, matches, live)
    if post_k <= costs.max_post_filter_k or force == ANN_POST_FILTERED:
        # ef / s ** exponent as well, for recall; neither past max_post_filter_k (forced on a tight filter, that would be
        # 10^5: what falls short is completed exactly), nor below k.
        wanted = max(post_k, math.ceil(ef * (live / max(matches, 1)) ** costs.post_filter_ef_exponent))
        candidates = min(live, max(k, min(wanted, costs.max_post_filter_k)))
        options.append(FilterPlan(ANN_POST_FILTERED, costs.ann(candidates, dim), matches, candidates, candidates))
    selectivity = matches / max(live, 1)
    options.append(FilterPlan(ANN_FILTERED, costs.ann(ef, dim) * max(selectivity, 1e-12) ** -costs.callback_exponent, matches, ef=ef))
    if force:
        for option in options:
            if option.strategy == force:
                return option
        raise ValueError(f"unknown filtered search strategy {force!r}; one of {', '.join(STRATEGIES)}")
    return min(options, key=lambda option: option.estimated_cost_us)
