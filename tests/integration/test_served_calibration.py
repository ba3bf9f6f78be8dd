"""`quiver-loadtest calibrate-served` end to end at a tiny size: real etcd, shard server and router processes
loaded and searched through the router, the served coefficients fitted onto a bare calibration, validated, and
read back by `quiver sizing`."""
from __future__ import annotations

import json

from click.testing import CliRunner

from loadtest.__main__ import main
from loadtest.cli_commands import sizing
from loadtest.sizing import DEFAULT_CALIBRATION, load_coefficients


def test_a_tiny_served_calibration_fits_served_coefficients_that_the_planner_then_uses(tmp_path):
    out = tmp_path / "calibration.json"
    before = DEFAULT_CALIBRATION.read_text()
    bare = CliRunner().invoke(main, [
        "calibrate", "--kinds", "hnsw,ivf_pq", "--sizes", "2000,4000", "--validate", "", "--dim", "16", "--clusters", "16",
        "--nlist", "16", "--nprobe", "4", "--pq-m", "4", "--nbits", "4", "--ef-construction", "40", "--queries", "50",
        "--qps-seconds", "0.05", "--out", str(out),
    ])
    assert bare.exit_code == 0, bare.output
    served = CliRunner().invoke(main, [
        # IVF-PQ is fitted past its training sample (10,000 points at least).
        "calibrate-served", "--kinds", "hnsw,ivf_pq", "--sizes", "10000,16000", "--validate", "12000", "--clients", "2",
        "--qps-seconds", "0.3", "--out", str(out), "--accept-misses",
    ])
    assert served.exit_code == 0, served.output
    coeffs = load_coefficients(out)
    assert coeffs.served_kinds == ("hnsw", "ivf_pq") and "calibrate-served" in coeffs.served_notes
    assert coeffs.router_core_s_per_query > 0 and coeffs.shard_process_bytes > 20e6  # an interpreter and its libraries
    assert coeffs.hnsw_qps_per_core > 0 and coeffs.measured  # the bare fit is kept beside the served one
    details = json.loads(out.with_name("calibration.served.details.json").read_text())
    assert sorted((m["kind"], m["n"]) for m in details["measurements"]) == [("hnsw", 10000), ("hnsw", 16000), ("ivf_pq", 10000), ("ivf_pq", 16000)]
    for m in details["measurements"] + details["validation_measurements"]:
        assert m["rss_anon_growth_bytes"] > 0 and m["ingest_core_s"] > 0 and m["queries"] > 0
        assert m["snapshot_bytes"] > m["n"] * 16 * 4 / 8  # a snapshot of the points (IVF-PQ's codes are 4 bits x 4)
        assert m["shard_core_s_per_query"] > 0 and m["router_core_s_per_query"] > 0
    assert min(m["recall_at_10"] for m in details["measurements"] if m["kind"] == "hnsw") >= 0.9
    assert [(v["kind"], v["n"]) for v in details["validation"]] == [("hnsw", 12000), ("ivf_pq", 12000)]
    for v in details["validation"]:
        assert v["bytes_per_point_measured"] > 0 and v["served_qps_per_core_predicted"] > 0
    plan = CliRunner().invoke(sizing, ["--vectors", "1e6", "--dim", "16", "--index", "hnsw", "--calibration", str(out)])
    assert plan.exit_code == 0, plan.output
    assert "served system" in plan.output and "CPU / query" in plan.output and "raw-vector files" in plan.output
    assert DEFAULT_CALIBRATION.read_text() == before
    # A validation miss leaves the coefficients file as it was, says which figures missed, and exits 1.
    kept = out.read_text()
    strict = CliRunner().invoke(main, ["calibrate-served", "--refit", str(out.with_name("calibration.served.details.json")),
                                       "--tolerance", "0", "--out", str(out)])
    assert strict.exit_code == 1, strict.output
    assert "out of tolerance" in strict.output and "hnsw at 12,000" in strict.output
    assert out.read_text() == kept and out.with_name("calibration.served.rejected.json").exists()
