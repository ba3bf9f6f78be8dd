"""The planner's served system (shard processes behind routers) and the fit of its served coefficients."""

import dataclasses
import json
import math

import numpy as np
import pytest

from loadtest.calibrate_served import (
    ID_BYTES,
    METADATA_BYTES,
    ServedMeasurement,
    ServedParams,
    bench_memory_row,
    fit_and_validate,
    fit_served,
    kind_validated,
    merge_runs,
    misses,
    refit,
    request_cost_fit,
    validation_row,
)
from loadtest.sizing import Coefficients, SizingInput, plan

BARE = Coefficients(
    machine="test", measured=True, ref_vectors=300_000, hnsw_overhead_bytes_per_vector=100.0, ivfpq_list_slack_fraction=0.5,
    hnsw_build_core_s_per_vector=4e-4, ivfpq_build_core_s_per_vector=3e-5, hnsw_qps_per_core=4000.0, ivfpq_qps_per_core=5000.0,
    hnsw_qps_size_exponent=0.34,  # as measured: the bare cost per query grows 1.7x from 200k to 1M points
)
SERVED = dataclasses.replace(
    BARE, hnsw_served_measured=True, ivfpq_served_measured=True, hnsw_served_validated=True, ivfpq_served_validated=True,
    shard_process_bytes=80e6, router_core_s_per_query=7e-4, hnsw_served_index_cost_factor=2.5,
    hnsw_served_snapshot_extra_bytes_per_point=20.0, ivfpq_served_snapshot_extra_bytes_per_point=4.0,
    hnsw_served_bytes_per_point=150.0, hnsw_served_request_core_s=2.5e-4, hnsw_served_ingest_core_s_per_point=1e-4,
    ivfpq_served_bytes_per_point=90.0, ivfpq_served_request_core_s=3e-4, ivfpq_served_ingest_core_s_per_point=5e-5,
    hnsw_served_fixed_bytes=30e6, ivfpq_served_fixed_bytes=150e6, ivfpq_served_ingest_fixed_core_s=12.0,
)
PARAMS = ServedParams()
MACHINE = {"cpu_model": "test", "usable_cores": 2, "ram_bytes": 0, "os": "test", "date": "today"}


CLIENT_CORE_S = 2.8e-4
CLIENT_INGEST_CORE_S = 6e-5  # per point


def as_measured(kind: str, n: int, coeffs: Coefficients = SERVED, scale: float = 1.0, speed: float = 1.0) -> ServedMeasurement:
    """What a run would measure if the served system behaved exactly as `coeffs` say (times `scale`), on a
    machine `speed` times as fast as the one of record (every CPU cost per query, the client's too, divided)."""
    p = plan(PARAMS.sizing_input(kind, n), coeffs)
    return ServedMeasurement(
        kind=kind, n=n, rss_growth_bytes=round(scale * p.shard_ram_bytes) + p.raw_vector_file_bytes,
        rss_anon_growth_bytes=round(scale * p.shard_ram_bytes), rss_file_growth_bytes=p.raw_vector_file_bytes,
        empty_shard_rss_bytes=round(coeffs.shard_process_bytes), ingest_wall_s=1.0,
        ingest_core_s=scale * p.build_core_seconds / speed, client_ingest_core_s=CLIENT_INGEST_CORE_S * n / speed,
        queries=1000, qps_wall=1.0, shard_core_s_per_query=scale * p.shard_core_s_per_query / speed,
        router_core_s_per_query=scale * coeffs.router_core_s_per_query / speed, client_core_s_per_query=CLIENT_CORE_S / speed,
        p50_ms=1.0, p99_ms=2.0,
        recall_at_10=0.95, snapshot_bytes=round(scale * p.snapshot_bytes),
    )


SERVED_NAMES = [f.name for f in dataclasses.fields(Coefficients)
                if f.name.startswith(("hnsw_served_", "ivfpq_served_")) and not f.name.endswith("_validated")]
FIT_SIZES = (200_000, 1_000_000)  # above IVF-PQ's training sample (39 * 4096 points)


def test_the_served_fit_recovers_the_coefficients_that_generated_the_measurements():
    measured = [as_measured(kind, n) for kind in ("hnsw", "ivf_pq") for n in FIT_SIZES]
    fitted, _ = fit_served(measured, PARAMS, BARE)
    assert fitted.served_kinds == ("hnsw", "ivf_pq")
    for name in SERVED_NAMES + ["router_core_s_per_query", "shard_process_bytes"]:
        assert getattr(fitted, name) == pytest.approx(getattr(SERVED, name), rel=1e-3, abs=1e-9), name
    # The bare coefficients are kept as they were.
    assert (fitted.hnsw_overhead_bytes_per_vector, fitted.hnsw_qps_per_core) == (100.0, 4000.0)


def test_a_served_hnsw_shard_holds_its_structures_and_an_empty_process_in_ram_and_its_raw_vector_copy_on_disk():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", id_bytes_per_point=ID_BYTES,
                      metadata_bytes_per_point=METADATA_BYTES, node_ram_bytes=2**40, node_cores=8)
    bare, served = plan(inp, BARE), plan(inp, SERVED)
    assert served.served_bytes == 1_000_000 * 150
    assert served.replica_ram_bytes == bare.replica_ram_bytes + served.served_bytes + 30_000_000  # + the shard's fixed part
    assert served.bytes_per_point == pytest.approx(bare.bytes_per_point + 150)
    assert served.raw_vector_file_bytes == 1_000_000 * 512 and bare.raw_vector_file_bytes == 0
    # Each snapshot also holds the raw-vector copy with its label and the measured extra; RAM-only bytes are not in it.
    assert served.snapshot_bytes == pytest.approx(bare.snapshot_bytes + 1_000_000 * (512 + 8 + 20), abs=2)
    assert served.disk_bytes_per_node == pytest.approx(bare.disk_bytes_per_node + 3 * (served.snapshot_bytes - bare.snapshot_bytes)
                                                       + served.raw_vector_file_bytes, abs=8)
    assert served.node_ram_budget_bytes == bare.node_ram_budget_bytes - 80_000_000
    index_core_s = 1 / bare.qps_per_shard_replica * 8
    assert served.shard_core_s_per_query == pytest.approx(2.5 * index_core_s + 2.5e-4)
    # One shard, one node: its 8 cores serve both the shard's and the router's CPU of every query.
    assert served.cluster_qps == pytest.approx(8 / (2.5 * index_core_s + 2.5e-4 + 7e-4))
    assert served.build_core_seconds == pytest.approx(bare.build_core_seconds + 1_000_000 * 1e-4)
    assert served.fixed_bytes == bare.fixed_bytes + 30_000_000
    assert served.shard_ram_bytes == bare.shard_ram_bytes + 1_000_000 * 150 + 30_000_000


def test_ivf_pq_served_memory_adds_no_raw_vectors_without_refine():
    inp = SizingInput(vectors=10**9, dim=1536, index_kind="ivf_pq", pq_m=64, ivf_nlist=65536, id_bytes_per_point=8,
                      node_ram_bytes=2**40, node_cores=32)
    assert plan(inp, SERVED).served_bytes == 90 * 10**9
    assert plan(inp, SERVED).vector_bytes == 0


def test_a_served_ivf_pq_shard_is_planned_with_compacted_lists_and_its_ingest_slack_beside_the_ram():
    inp = SizingInput(vectors=10**9, dim=1536, index_kind="ivf_pq", pq_m=64, ivf_nlist=65536, id_bytes_per_point=8,
                      node_ram_bytes=2**40, node_cores=32)
    bare, served = plan(inp, BARE), plan(inp, SERVED)
    assert bare.overhead_bytes > 0 and bare.ingest_list_slack_bytes == 0  # the bare index keeps faiss's slack
    assert served.overhead_bytes == 0  # a served shard's lists are compacted once writes go quiet
    at_served_shards = plan(dataclasses.replace(inp, vectors=served.vectors_per_shard), BARE)
    assert served.ingest_list_slack_bytes == pytest.approx(served.shards * at_served_shards.overhead_bytes, rel=1e-6)
    assert served.replica_ram_bytes == served.fixed_bytes + inp.vectors * (64 + 8 + 8 + 90)
    assert not any("while writes go on" in note for note in served.notes)
    # One shard fills a node whose whole RAM is its budget: the slack of an ingest would not fit.
    tight = plan(dataclasses.replace(inp, node_ram_bytes=math.ceil(served.shard_ram_bytes / 0.99) + 10**8, ram_headroom=0.99), SERVED)
    assert tight.shards == 1
    assert any("while writes go on" in note for note in tight.notes)


def test_routing_cpu_spreads_over_every_node_of_a_larger_cluster():
    inp = SizingInput(vectors=40_000_000, dim=128, index_kind="hnsw", node_ram_bytes=16 * 2**30, node_cores=8)
    p = plan(inp, SERVED)
    assert p.nodes > 1 and p.shard_replicas_per_node >= 1
    expected = 1 / (p.shard_replicas_per_node / p.qps_per_shard_replica + 7e-4 / (p.nodes * 8))
    assert p.cluster_qps == pytest.approx(expected)


@pytest.mark.parametrize("target", [2_000.0, 10_000.0, 40_000.0])
def test_a_plan_that_can_reach_its_qps_target_meets_it_with_the_routers_cpu_counted(target):
    inp = SizingInput(vectors=40_000_000, dim=128, index_kind="hnsw", node_ram_bytes=64 * 2**30, node_cores=8,
                      target_qps=target, replication_factor=2)
    p = plan(inp, SERVED)
    assert p.meets_target_qps and p.cluster_qps >= target
    busiest = p.shard_replicas_per_node / (2 * p.qps_per_shard_replica) + 7e-4 / (p.nodes * 8)
    assert p.cluster_qps == pytest.approx(1 / busiest)
    # The fewest nodes that do: one node fewer (at least as many shard replicas on each) misses the target or RAM.
    fewer = p.nodes - 1
    if fewer >= 2 and math.ceil(p.shards * 2 / fewer) * p.shard_ram_bytes <= p.node_ram_budget_bytes:
        per_node = math.ceil(p.shards * 2 / fewer)
        assert 1 / (per_node / (2 * p.qps_per_shard_replica) + 7e-4 / (fewer * 8)) < target


def test_the_routers_cpu_alone_can_put_a_target_out_of_reach_and_the_plan_says_what_replication_would_reach_it():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", node_ram_bytes=64 * 2**30, node_cores=8,
                      target_qps=1e6)
    p = plan(inp, SERVED)
    assert not p.meets_target_qps
    note = next(n for n in p.notes if "out of reach" in n)
    needed = int(note.rsplit(">= ", 1)[1])
    assert plan(dataclasses.replace(inp, replication_factor=needed), SERVED).meets_target_qps
    # Without the routers' CPU the same shards would need fewer replicas: the note counts it.
    assert needed > math.ceil(1e6 / p.qps_per_shard_replica)


def test_a_plan_from_bare_coefficients_says_it_is_of_the_bare_index():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", node_ram_bytes=2**40, node_cores=8)
    assert any("bare index" in note for note in plan(inp, BARE).notes)
    assert not any("bare index" in note for note in plan(inp, SERVED).notes)
    assert plan(inp, BARE).served_bytes == 0 and plan(inp, BARE).shard_process_bytes == 0


def test_a_kind_the_served_calibration_did_not_measure_is_planned_as_the_bare_index():
    flat = SizingInput(vectors=1_000_000, dim=128, index_kind="flat", node_ram_bytes=2**40, node_cores=8)
    p = plan(flat, SERVED)
    assert not p.coefficients_served and p.shard_process_bytes == 0
    assert any("no served calibration of flat" in note for note in p.notes)


def test_a_kind_whose_served_validation_missed_says_so_in_its_plans():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="ivf_pq", ivf_nlist=4096, node_ram_bytes=2**40, node_cores=8)
    assert not any("missed its validation" in note for note in plan(inp, SERVED).notes)
    missed = dataclasses.replace(SERVED, ivfpq_served_validated=False)
    assert any("missed its validation" in note for note in plan(inp, missed).notes)
    assert plan(inp, missed).coefficients_served  # still the served figures, flagged


def test_ivf_pq_per_shard_intercepts_scale_with_the_training_sample_and_its_k_means():
    at_ref = SizingInput(vectors=10_000_000, dim=128, index_kind="ivf_pq", ivf_nlist=4096, node_ram_bytes=2**40, node_cores=8)
    bigger = dataclasses.replace(at_ref, dim=256, pq_m=16, ivf_nlist=8192)
    ref, big = plan(at_ref, SERVED), plan(bigger, SERVED)
    assert ref.fixed_bytes - plan(at_ref, BARE).fixed_bytes == 150_000_000
    assert big.fixed_bytes - plan(bigger, BARE).fixed_bytes == 150_000_000 * 2 * 2
    training = big.build_core_seconds - plan(bigger, BARE).build_core_seconds - 10_000_000 * 5e-5
    assert training == pytest.approx(12.0 * 2 * 2 * 2)
    assert any("scaled from nlist=4096" in note for note in big.notes)
    assert not any("scaled from" in note for note in ref.notes)


def test_ivf_pq_is_fitted_only_on_sizes_past_its_training_sample():
    # Below 39 * nlist the shard trains on everything it holds: a size there would bend the line.
    measured = [as_measured("ivf_pq", n) for n in FIT_SIZES] + [as_measured("ivf_pq", 100_000, scale=3.0)]
    fitted, details = fit_served(measured, PARAMS, BARE)
    assert details["ivf_pq"]["fitted_on"] == list(FIT_SIZES)
    assert fitted.ivfpq_served_bytes_per_point == pytest.approx(90.0, rel=1e-3)
    with pytest.raises(ValueError, match="training sample"):
        fit_served([as_measured("ivf_pq", 100_000)], PARAMS, BARE)


def test_the_request_cost_fit_keeps_a_served_search_at_least_as_costly_as_the_bare_one():
    assert request_cost_fit([3e-4, 7e-4], [1e-4, 2.6e-4]) == pytest.approx((2.5, 5e-5))
    # Noise that would make the served search cheaper than the bare one per unit of index work: factor 1.
    factor, request = request_cost_fit([5.4e-4, 5.3e-4], [1.2e-4, 2.4e-4])
    assert factor == 1.0 and request == pytest.approx(np.mean([5.4e-4 - 1.2e-4, 5.3e-4 - 2.4e-4]))
    # A slope so steep its line would cost a negative request: the line through the origin instead.
    factor, request = request_cost_fit([2e-4, 9e-4], [1e-4, 2.5e-4])
    assert factor == pytest.approx((1e-4 * 2e-4 + 2.5e-4 * 9e-4) / (1e-4**2 + 2.5e-4**2)) and request >= 0.0


def test_the_request_cost_fit_does_not_read_a_factor_into_bare_costs_that_barely_differ():
    # IVF-PQ's bare cost hardly moves with n: 10% of noise in the served cost must not become a factor of 13.
    factor, request = request_cost_fit([4.33e-4, 5.17e-4], [1.380e-4, 1.445e-4])
    assert factor == 1.0
    assert request == pytest.approx(np.mean([4.33e-4 - 1.380e-4, 5.17e-4 - 1.445e-4]))


def test_cpu_costs_are_fitted_and_validated_at_the_machines_speed_of_record():
    # The machine ran 25% faster while the 1M points were measured and 20% slower during the validation:
    # the client's own CPU per query and per point says so, and the fit and the check see through it.
    measured = [as_measured(kind, n, speed=1.25 if n == FIT_SIZES[-1] else 1.0) for kind in ("hnsw", "ivf_pq") for n in FIT_SIZES]
    coeffs, details = fit_and_validate(measured, [as_measured("hnsw", 300_000, speed=0.8)], PARAMS, BARE, machine=MACHINE)
    slower = (1 + 1 / 1.25) / 2  # the reference: the fit's mean client cost, in units of the model's
    assert details["speed_reference"] == pytest.approx({"query_core_s": CLIENT_CORE_S * slower,
                                                        "ingest_core_s_per_point": CLIENT_INGEST_CORE_S * slower})
    # Costs of record are those at the reference speed: `slower` times the model's.
    assert coeffs.router_core_s_per_query == pytest.approx(SERVED.router_core_s_per_query * slower)
    assert coeffs.hnsw_served_index_cost_factor == pytest.approx(SERVED.hnsw_served_index_cost_factor * slower, rel=1e-3)
    row = details["validation"][0]
    assert row["served_qps_per_core_error_percent"] == pytest.approx(0.0, abs=1e-6)
    # Ingest: within a fraction of a percent (the bare build is of record and not scaled, and not linear in n).
    assert row["ingest_core_s_per_point_error_percent"] == pytest.approx(0.0, abs=0.5)
    assert row["served_qps_per_core_raw_error_percent"] == pytest.approx(100 * (1 / slower / 0.8 - 1), rel=1e-3)
    assert row["ingest_core_s_per_point_raw_error_percent"] == pytest.approx(100 * (slower * 0.8 - 1), abs=0.5)
    assert row["machine_speed_scale"] == pytest.approx(slower * 0.8)
    assert coeffs.hnsw_served_validated


def test_validated_flags_follow_each_kinds_validation_and_misses_name_each_figure():
    rows = [validation_row(as_measured("hnsw", 300_000), PARAMS, SERVED, 15.0),
            validation_row(as_measured("ivf_pq", 300_000, scale=1.5), PARAMS, SERVED, 15.0)]
    assert kind_validated("hnsw", rows) and not kind_validated("ivf_pq", rows) and not kind_validated("flat", rows)
    assert any(m.startswith("ivf_pq at 300,000: bytes_per_point -33.3%") for m in misses(rows))
    assert not any(m.startswith("hnsw") for m in misses(rows))
    measured = [as_measured(kind, n) for kind in ("hnsw", "ivf_pq") for n in FIT_SIZES]
    coeffs, _ = fit_and_validate(measured, [as_measured("hnsw", 300_000), as_measured("ivf_pq", 300_000, scale=1.5)],
                                 PARAMS, BARE, machine=MACHINE)
    assert coeffs.hnsw_served_validated and not coeffs.ivfpq_served_validated


def test_runs_are_merged_per_kind_for_a_refit():
    old = fit_and_validate([as_measured(k, n, scale=1.2) for k in ("hnsw", "ivf_pq") for n in FIT_SIZES], [], PARAMS, BARE, machine=MACHINE)[1]
    new = fit_and_validate([as_measured("ivf_pq", n) for n in FIT_SIZES], [], PARAMS, BARE, machine=MACHINE)[1]
    merged = merge_runs([json.loads(json.dumps(old)), json.loads(json.dumps(new))])
    assert [(m["kind"], m["n"]) for m in merged["measurements"]] == [("hnsw", n) for n in FIT_SIZES] + [("ivf_pq", n) for n in FIT_SIZES]
    assert merged["measurements"][2]["ingest_core_s"] == new["measurements"][0]["ingest_core_s"]
    coeffs, _ = refit([old, new], BARE)
    assert coeffs.ivfpq_served_bytes_per_point == pytest.approx(90.0, rel=1e-3)
    bad = json.loads(json.dumps(new))
    bad["params"]["dim"] = 64
    with pytest.raises(ValueError, match="differ"):
        merge_runs([old, bad])


def test_validation_passes_a_prediction_it_matches_and_fails_one_off_by_a_third():
    exact = validation_row(as_measured("hnsw", 1_000_000), PARAMS, SERVED, 15.0)
    assert exact["bytes_per_point_error_percent"] == pytest.approx(0.0, abs=1e-3)
    assert exact["served_qps_per_core_error_percent"] == pytest.approx(0.0, abs=1e-6)
    assert exact["ingest_core_s_per_point_within_tolerance"] and exact["bytes_per_point_within_tolerance"]
    off = validation_row(as_measured("hnsw", 1_000_000, scale=1.5), PARAMS, SERVED, 15.0)
    assert off["bytes_per_point_error_percent"] == pytest.approx(100 * (1 / 1.5 - 1), rel=1e-3)
    assert not off["bytes_per_point_within_tolerance"] and not off["served_qps_per_core_within_tolerance"]


def test_a_bench_memory_result_is_checked_at_its_own_size_pq_m_and_metric(tmp_path):
    # bench_memory loads cosine collections: no precomputed table, which the calibration's l2 shards hold.
    inp = PARAMS.sizing_input("ivf_pq", 10_000_000, pq_m=64, metric="cosine")
    predicted = plan(inp, SERVED).shard_ram_bytes
    assert predicted < plan(PARAMS.sizing_input("ivf_pq", 10_000_000, pq_m=64), SERVED).shard_ram_bytes
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"index": "ivf_pq", "n": 10_000_000, "dim": 128, "params": {"nlist": 4096, "m": 64},
                                "grown": {"RssAnon": round(predicted * 1.1)}}))
    row = bench_memory_row(path, PARAMS, SERVED, 15.0)
    assert row["bytes_per_point_error_percent"] == pytest.approx(100 * (1 / 1.1 - 1), rel=1e-3)
    assert row["bytes_per_point_within_tolerance"]
    path.write_text(json.dumps({"index": "hnsw", "n": 1000, "dim": 64, "params": {"m": 16}, "grown": {"RssAnon": 1}}))
    with pytest.raises(ValueError, match="differ"):
        bench_memory_row(path, PARAMS, SERVED, 15.0)


def test_a_refit_from_a_runs_details_gives_the_same_coefficients():
    measured = [as_measured(kind, n) for kind in ("hnsw", "ivf_pq") for n in FIT_SIZES]
    checks = [as_measured("hnsw", 300_000, scale=1.05)]
    coeffs, details = fit_and_validate(measured, checks, PARAMS, BARE, machine=MACHINE)
    again, details_again = refit(json.loads(json.dumps(details)), BARE)
    assert dataclasses.asdict(again) == dataclasses.asdict(coeffs)
    assert details_again["validation"] == details["validation"]
    assert math.isclose(details["validation"][0]["bytes_per_point_error_percent"], 100 * (1 / 1.05 - 1), rel_tol=1e-3)


def test_a_served_fit_below_the_layouts_fractional_bytes_still_plans_a_point_at_its_exact_bytes():
    # Tiny, noisy calibrations (RSS that shrank between two sizes) can fit a served slope below zero.
    shrunk = dataclasses.replace(SERVED, ivfpq_served_bytes_per_point=-1e6)
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="ivf_pq", node_ram_bytes=2**34, node_cores=8)
    p = plan(inp, shrunk)
    assert p.shards >= 1 and p.shard_ram_bytes > 0
