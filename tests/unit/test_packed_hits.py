"""Packed hits (quiver/wire/packed_hits.py) carry a batch's ids and scores exactly, refuse arrays that disagree,
and the router's packed merge picks what the message merge picks, in the same order."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.v1 import types_pb2
from quiver.wire.packed_hits import HitBatch
from router.merge import merge_hit_batches, merge_results_batch

IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)  # NUL and multi-byte characters included


@st.composite
def batches(draw, n_queries: int | None = None, max_hits: int = 6) -> tuple[list[list[str]], list[np.ndarray]]:
    n = draw(st.integers(0, 5)) if n_queries is None else n_queries
    ids, scores = [], []
    for _ in range(n):
        count = draw(st.integers(0, max_hits))
        ids.append(draw(st.lists(IDS, min_size=count, max_size=count)))
        # Few distinct values, so ties are common: the merge must keep shard order, then in-shard order.
        drawn = draw(st.lists(st.sampled_from([0.25, 0.5, 0.75, 1.0]), min_size=count, max_size=count))
        scores.append(np.sort(np.array(drawn, dtype=np.float32))[::-1].copy())
    return ids, scores


def packed_of(ids: list[list[str]], scores: list[np.ndarray], strategy: int = types_pb2.ANN) -> HitBatch:
    n = len(ids)
    return HitBatch.build(ids, scores, [strategy] * n, [1.5 * q for q in range(n)], [7 * q for q in range(n)])


@settings(max_examples=60, deadline=None)
@given(batches())
def test_a_packed_batch_reads_back_every_query_s_ids_scores_and_counters_through_the_wire(batch):
    ids, scores = batch
    sent = packed_of(ids, scores, types_pb2.EXACT_FILTERED)
    received = HitBatch.from_proto(types_pb2.PackedHits.FromString(sent.to_proto().SerializeToString()))
    assert received.id_lists() == ids
    assert received.score_lists() == [s.tolist() for s in scores]
    assert received.strategies.tolist() == [types_pb2.EXACT_FILTERED] * len(ids)
    assert received.estimated_cost_us.tolist() == [1.5 * q for q in range(len(ids))]
    assert received.filter_matches.tolist() == [7 * q for q in range(len(ids))]
    results = received.to_results()
    assert [list(r.ids) for r in results] == ids and [r.filter_matches for r in results] == [7 * q for q in range(len(ids))]


@settings(max_examples=60, deadline=None)
@given(batches(), st.data())
def test_the_hits_of_a_range_of_queries_are_those_queries_alone(batch, data):
    ids, scores = batch
    start = data.draw(st.integers(0, len(ids)))
    end = data.draw(st.integers(start, len(ids)))
    part = HitBatch.from_proto(packed_of(ids, scores).queries(start, end).to_proto())  # its arrays agree
    assert part.id_lists() == ids[start:end]
    assert part.score_lists() == [s.tolist() for s in scores[start:end]]
    assert part.filter_matches.tolist() == [7 * q for q in range(start, end)]


def test_packed_hits_whose_arrays_disagree_are_refused_with_what_disagrees():
    good = packed_of([["a", "bc"], ["d"]], [np.array([0.9, 0.5], np.float32), np.array([0.7], np.float32)]).to_proto()
    HitBatch.from_proto(good)
    broken = {
        "a score short": dict(scores=good.scores[:-4]),
        "an id's length short": dict(id_lengths=good.id_lengths[:-4]),
        "a byte of ids missing": dict(ids=good.ids[:-1]),
        "a count of a partial uint32": dict(counts=good.counts + b"\x01"),
        "a strategy short": dict(strategies=good.strategies[:-1]),
        "a match count short": dict(filter_matches=good.filter_matches[:-8]),
    }
    for what, change in broken.items():
        bad = types_pb2.PackedHits()
        bad.CopyFrom(good)
        for name, value in change.items():
            setattr(bad, name, value)
        with pytest.raises(ValueError, match="malformed packed hits"):
            HitBatch.from_proto(bad)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.data())
def test_the_packed_merge_picks_the_message_merge_s_hits_in_its_order(n_queries, k, data):
    shards = [data.draw(batches(n_queries=n_queries)) for _ in range(data.draw(st.integers(2, 4)))]
    # Shards may run different strategies (one exact, short of points): the merged query reports the first's.
    strategies = [types_pb2.ANN] + [types_pb2.EXACT] * (len(shards) - 1)
    as_messages = [packed_of(ids, scores, strategy).to_results() for (ids, scores), strategy in zip(shards, strategies)]
    want_ids, want_scores, _, _ = merge_results_batch(as_messages, n_queries, k)
    merged = merge_hit_batches([packed_of(ids, scores, strategy) for (ids, scores), strategy in zip(shards, strategies)], k)
    assert merged.strategies.tolist() == [types_pb2.ANN] * n_queries
    assert merged.id_lists() == want_ids
    assert merged.score_lists() == want_scores
    assert merged.estimated_cost_us.tolist() == [1.5 * q * len(shards) for q in range(n_queries)]
    assert merged.filter_matches.tolist() == [7 * q * len(shards) for q in range(n_queries)]


def test_shards_answering_for_different_numbers_of_queries_are_not_merged():
    one = packed_of([["a"]], [np.array([1.0], np.float32)])
    two = packed_of([["b"], ["c"]], [np.array([1.0], np.float32), np.array([0.5], np.float32)])
    with pytest.raises(ValueError, match="queries"):
        merge_hit_batches([one, two], 3)


def test_a_hit_scored_plus_infinity_is_kept_with_its_own_id_by_both_merges():
    # An inner product of finite vectors can overflow float32: that hit is the best, not padding.
    shards = [([["big", "a"]], [np.array([np.inf, 1.0], np.float32)]), ([["b"]], [np.array([0.5], np.float32)])]
    merged = merge_hit_batches([packed_of(ids, scores) for ids, scores in shards], 3)
    assert merged.id_lists() == [["big", "a", "b"]] and merged.score_lists() == [[np.inf, 1.0, 0.5]]
    ids, scores, _, _ = merge_results_batch([packed_of(i, s).to_results() for i, s in shards], 1, 3)
    assert ids == [["big", "a", "b"]] and scores == [[np.inf, 1.0, 0.5]]


def test_the_merged_cost_estimate_is_the_shards_sum_rounded_once_as_in_messages():
    costs = [16.52763557434082, 813.2702026367188, 912.7555541992188]  # float32 summed in float32: 1742.5535
    shards = [HitBatch.build([["x"]], [np.array([1.0], np.float32)], [types_pb2.ANN], [c], [0]) for c in costs]
    merged = merge_hit_batches(shards, 1)
    assert merged.estimated_cost_us.tolist() == [float(np.float32(sum(float(np.float32(c)) for c in costs)))]


def test_shard_answers_for_fewer_queries_than_the_batch_are_refused_even_from_one_shard():
    from quiver.v1 import shard_pb2
    from router.servicer import _merge_packed

    answer = shard_pb2.SearchResponse(hits=packed_of([["a"]], [np.array([1.0], np.float32)]).to_proto())
    assert _merge_packed([answer], 1, 5).id_lists() == [["a"]]
    for answers in ([answer], [answer, answer]):
        with pytest.raises(ValueError, match="the batch has 2"):
            _merge_packed(answers, 2, 5)
