"""The planner's served system (shard processes behind routers) and the fit of its served coefficients."""

import dataclasses
import json
import math

import pytest

from loadtest.calibrate_served import (
    ID_BYTES,
    METADATA_BYTES,
    ServedMeasurement,
    ServedParams,
    bench_memory_row,
    fit_and_validate,
    fit_served,
    refit,
    validation_row,
)
from loadtest.sizing import Coefficients, SizingInput, plan

BARE = Coefficients(
    machine="test", measured=True, ref_vectors=300_000, hnsw_overhead_bytes_per_vector=100.0, ivfpq_list_slack_fraction=0.5,
    hnsw_build_core_s_per_vector=4e-4, ivfpq_build_core_s_per_vector=3e-5, hnsw_qps_per_core=4000.0, ivfpq_qps_per_core=5000.0,
)
SERVED = dataclasses.replace(
    BARE, served_measured=True, shard_process_bytes=80e6, router_core_s_per_query=7e-4,
    hnsw_served_bytes_per_point=150.0, hnsw_served_request_core_s=2.5e-4, hnsw_served_ingest_core_s_per_point=1e-4,
    ivfpq_served_bytes_per_point=90.0, ivfpq_served_request_core_s=3e-4, ivfpq_served_ingest_core_s_per_point=5e-5,
    hnsw_served_fixed_bytes=30e6, ivfpq_served_fixed_bytes=150e6, ivfpq_served_ingest_fixed_core_s=12.0,
)
PARAMS = ServedParams()


def as_measured(kind: str, n: int, coeffs: Coefficients = SERVED, scale: float = 1.0) -> ServedMeasurement:
    """What a run would measure if the served system behaved exactly as `coeffs` say (times `scale`)."""
    p = plan(PARAMS.sizing_input(kind, n), coeffs)
    return ServedMeasurement(
        kind=kind, n=n, rss_growth_bytes=round(scale * p.shard_ram_bytes) + p.raw_vector_file_bytes,
        rss_anon_growth_bytes=round(scale * p.shard_ram_bytes), rss_file_growth_bytes=p.raw_vector_file_bytes,
        empty_shard_rss_bytes=round(coeffs.shard_process_bytes), ingest_wall_s=1.0,
        ingest_core_s=scale * p.build_core_seconds,
        queries=1000, qps_wall=1.0, shard_core_s_per_query=scale * p.shard_core_s_per_query,
        router_core_s_per_query=scale * coeffs.router_core_s_per_query, client_core_s_per_query=0.0, p50_ms=1.0, p99_ms=2.0,
        recall_at_10=0.95,
    )


SERVED_NAMES = [f.name for f in dataclasses.fields(Coefficients) if f.name.startswith(("hnsw_served_", "ivfpq_served_"))]


def test_the_served_fit_recovers_the_coefficients_that_generated_the_measurements():
    measured = [as_measured(kind, n) for kind in ("hnsw", "ivf_pq") for n in (100_000, 300_000)]
    fitted, _ = fit_served(measured, PARAMS, BARE)
    assert fitted.served_measured
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
    assert served.disk_bytes_per_node == bare.disk_bytes_per_node + served.served_bytes + 30_000_000 + served.raw_vector_file_bytes
    assert served.node_ram_budget_bytes == bare.node_ram_budget_bytes - 80_000_000
    index_core_s = 1 / bare.qps_per_shard_replica * 8
    assert served.shard_core_s_per_query == pytest.approx(index_core_s + 2.5e-4)
    # One shard, one node: its 8 cores serve both the shard's and the router's CPU of every query.
    assert served.cluster_qps == pytest.approx(8 / (index_core_s + 2.5e-4 + 7e-4))
    assert served.build_core_seconds == pytest.approx(bare.build_core_seconds + 1_000_000 * 1e-4)
    assert served.fixed_bytes == bare.fixed_bytes + 30_000_000
    assert served.shard_ram_bytes == bare.shard_ram_bytes + 1_000_000 * 150 + 30_000_000


def test_ivf_pq_served_memory_adds_no_raw_vectors_without_refine():
    inp = SizingInput(vectors=10**9, dim=1536, index_kind="ivf_pq", pq_m=64, ivf_nlist=65536, id_bytes_per_point=8,
                      node_ram_bytes=2**40, node_cores=32)
    assert plan(inp, SERVED).served_bytes == 90 * 10**9
    assert plan(inp, SERVED).vector_bytes == 0


def test_routing_cpu_spreads_over_every_node_of_a_larger_cluster():
    inp = SizingInput(vectors=40_000_000, dim=128, index_kind="hnsw", node_ram_bytes=16 * 2**30, node_cores=8)
    p = plan(inp, SERVED)
    assert p.nodes > 1 and p.shard_replicas_per_node >= 1
    expected = 1 / (p.shard_replicas_per_node / p.qps_per_shard_replica + 7e-4 / (p.nodes * 8))
    assert p.cluster_qps == pytest.approx(expected)


def test_a_plan_from_bare_coefficients_says_it_is_of_the_bare_index():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", node_ram_bytes=2**40, node_cores=8)
    assert any("bare index" in note for note in plan(inp, BARE).notes)
    assert not any("bare index" in note for note in plan(inp, SERVED).notes)
    assert plan(inp, BARE).served_bytes == 0 and plan(inp, BARE).shard_process_bytes == 0


def test_validation_passes_a_prediction_it_matches_and_fails_one_off_by_a_third():
    exact = validation_row(as_measured("hnsw", 1_000_000), PARAMS, SERVED, 15.0)
    assert exact["bytes_per_point_error_percent"] == pytest.approx(0.0, abs=1e-3)
    assert exact["served_qps_per_core_error_percent"] == pytest.approx(0.0, abs=1e-6)
    assert exact["ingest_core_s_per_point_within_tolerance"] and exact["bytes_per_point_within_tolerance"]
    off = validation_row(as_measured("hnsw", 1_000_000, scale=1.5), PARAMS, SERVED, 15.0)
    assert off["bytes_per_point_error_percent"] == pytest.approx(100 * (1 / 1.5 - 1), rel=1e-3)
    assert not off["bytes_per_point_within_tolerance"] and not off["served_qps_per_core_within_tolerance"]


def test_a_bench_memory_result_is_checked_at_its_own_size_and_pq_m(tmp_path):
    inp = PARAMS.sizing_input("ivf_pq", 10_000_000, pq_m=64)
    predicted = plan(inp, SERVED).shard_ram_bytes
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
    measured = [as_measured(kind, n) for kind in ("hnsw", "ivf_pq") for n in (100_000, 300_000)]
    checks = [as_measured("hnsw", 1_000_000, scale=1.05)]
    coeffs, details = fit_and_validate(measured, checks, PARAMS, BARE, machine={"cpu_model": "test", "usable_cores": 2, "ram_bytes": 0, "os": "test", "date": "today"})
    again, details_again = refit(json.loads(json.dumps(details)), BARE)
    assert dataclasses.asdict(again) == dataclasses.asdict(coeffs)
    assert details_again["validation"] == details["validation"]
    assert math.isclose(details["validation"][0]["bytes_per_point_error_percent"], 100 * (1 / 1.05 - 1), rel_tol=1e-3)
