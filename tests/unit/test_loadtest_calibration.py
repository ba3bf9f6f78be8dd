"""The calibration fit recovers known coefficients, and a tiny real calibration writes a usable file."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from loadtest.__main__ import main
from loadtest.calibrate import details_path
from loadtest.calibration_fit import Measurement, Reference, fit_coefficients, line_fit, predict, sizing_input
from loadtest.sizing import DEFAULT_CALIBRATION, Coefficients, _layout, load_coefficients, plan

KNOWN = Coefficients(
    machine="truth", measured=True,
    hnsw_overhead_bytes_per_vector=123.0, ivfpq_list_slack_fraction=0.4,
    flat_build_core_s_per_vector=3e-8, hnsw_build_core_s_per_vector=7e-4, ivfpq_build_core_s_per_vector=5e-5,
    flat_qps_per_core=35.0, hnsw_qps_per_core=4200.0, ivfpq_qps_per_core=1700.0,
    hnsw_qps_size_exponent=0.45, hnsw_build_size_exponent=0.4,
)
REF = Reference(vectors=300_000, dim=128, hnsw_m=16, ivf_nlist=1024, ivf_nprobe=16, pq_m=16, pq_nbits=8)
SIZES = (100_000, 300_000, 1_000_000)
FITTED_FIELDS = [f.name for f in dataclasses.fields(Coefficients) if f.name.endswith(("_per_vector", "_fraction", "_per_core", "_exponent"))]


def synthetic_measurements(truth: Coefficients, extra_fixed_bytes: float = 0.0, noise: float = 0.0) -> list[Measurement]:
    """What the planner says each build costs under `truth`, plus a fixed cost it does not know of."""
    out = []
    for i, kind in enumerate(("hnsw", "ivf_pq", "flat")):
        for j, n in enumerate(SIZES):
            wobble = 1 + noise * ((-1) ** (i + j))
            p = predict(kind, n, REF, truth)
            out.append(Measurement(
                kind=kind, n=n, rss_bytes=round(p.bytes_per_vector * n * wobble + extra_fixed_bytes),
                build_core_s=p.build_core_s_per_vector * n * wobble, qps_per_core=p.qps_per_core / wobble,
            ))
    return out


def test_fit_recovers_the_coefficients_that_generated_the_measurements():
    truth = dataclasses.replace(KNOWN, ref_vectors=REF.vectors, ref_ivf_nlist=REF.ivf_nlist)
    fitted, details = fit_coefficients(synthetic_measurements(truth), REF, machine="m")
    for name in FITTED_FIELDS:
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-6, abs=1e-3), name
    assert (fitted.ref_vectors, fitted.ref_dim, fitted.ref_ivf_nlist) == (300_000, 128, 1024)
    assert fitted.measured and fitted.machine == "m"
    assert details["flat"]["residual_bytes_per_vector"] == pytest.approx(0, abs=1e-3)


def test_memory_fit_ignores_fixed_costs_the_planner_does_not_model():
    truth = dataclasses.replace(KNOWN, ref_vectors=REF.vectors, ref_ivf_nlist=REF.ivf_nlist)
    fitted, details = fit_coefficients(synthetic_measurements(truth, extra_fixed_bytes=50e6), REF, machine="m")
    assert fitted.hnsw_overhead_bytes_per_vector == pytest.approx(123.0, abs=1e-3)
    assert fitted.ivfpq_list_slack_fraction == pytest.approx(0.4, abs=1e-6)
    modelled = _layout(sizing_input("hnsw", REF.vectors, REF), fitted).fixed_per_shard
    assert details["hnsw"]["fixed_bytes_fitted"] == pytest.approx(modelled + 50e6, rel=1e-6)


def test_fit_with_noisy_measurements_lands_close():
    truth = dataclasses.replace(KNOWN, ref_vectors=REF.vectors, ref_ivf_nlist=REF.ivf_nlist)
    fitted, _ = fit_coefficients(synthetic_measurements(truth, noise=0.02), REF, machine="m")
    for name in ("hnsw_build_core_s_per_vector", "hnsw_qps_per_core", "ivfpq_qps_per_core", "flat_qps_per_core"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.03), name
    assert fitted.hnsw_overhead_bytes_per_vector == pytest.approx(123.0, abs=0.1 * 800)


def test_one_size_subtracts_the_modelled_fixed_cost_and_unmeasured_kinds_keep_the_base():
    ref = dataclasses.replace(REF, vectors=100_000)
    truth = dataclasses.replace(KNOWN, ref_vectors=ref.vectors, ref_ivf_nlist=ref.ivf_nlist)
    p = predict("hnsw", 100_000, ref, truth)
    only = Measurement("hnsw", 100_000, round(p.bytes_per_vector * 100_000), p.build_core_s_per_vector * 100_000, p.qps_per_core)
    fitted, _ = fit_coefficients([only], ref, machine="m", base=KNOWN)
    assert fitted.hnsw_overhead_bytes_per_vector == pytest.approx(123.0, abs=1e-3)
    assert fitted.ivfpq_qps_per_core == KNOWN.ivfpq_qps_per_core


def test_predicted_memory_is_the_planners_index_bytes_per_vector():
    truth = dataclasses.replace(KNOWN, ref_vectors=REF.vectors)
    p = predict("ivf_pq", 1_000_000, REF, truth)
    assert p.bytes_per_vector == plan(sizing_input("ivf_pq", 1_000_000, REF), truth).index_bytes / 1_000_000
    assert line_fit([(1, 3), (2, 5), (3, 7)]) == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError):
        line_fit([(1, 3), (1, 4)])


def test_tiny_calibration_writes_coefficients_that_load_coefficients_reads(tmp_path):
    out = tmp_path / "calibration.json"
    before = DEFAULT_CALIBRATION.read_text()
    result = CliRunner().invoke(main, [
        "calibrate", "--sizes", "2000,4000", "--validate", "8000", "--dim", "16", "--clusters", "16",
        "--nlist", "16", "--nprobe", "4", "--pq-m", "4", "--nbits", "4", "--ef-construction", "40", "--queries", "50",
        "--qps-seconds", "0.05", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    coeffs = load_coefficients(out)
    assert coeffs.measured and "cores" in coeffs.machine and "RAM" in coeffs.machine
    assert (coeffs.ref_vectors, coeffs.ref_dim, coeffs.ref_ivf_nlist, coeffs.ref_pq_m) == (4000, 16, 16, 4)
    assert "SYNTHETIC" in coeffs.notes
    details = json.loads(details_path(out).read_text())
    assert details["synthetic"] is True and details["machine"]["usable_cores"] >= 1
    assert details["machine"]["cpu_model"] and details["machine"]["ram_bytes"] > 0 and details["machine"]["date"]
    assert sorted((m["kind"], m["n"]) for m in details["measurements"]) == sorted(
        (k, n) for k in ("hnsw", "ivf_pq", "flat") for n in (2000, 4000))
    assert [(v["kind"], v["n"]) for v in details["validation"]] == [("hnsw", 8000), ("ivf_pq", 8000), ("flat", 8000)]
    for v in details["validation"]:
        assert v["bytes_per_vector_measured"] > 0 and v["bytes_per_vector_predicted"] > 0
    assert "predicted" in result.output and "%" in result.output
    assert DEFAULT_CALIBRATION.read_text() == before

    # A refit from those details measures nothing, gives the same coefficients, and keeps the file's others.
    saved = tmp_path / "run.details.json"
    saved.write_text(details_path(out).read_text())
    out.write_text(json.dumps(json.loads(out.read_text()) | {"router_core_s_per_query": 0.00123}))
    again = CliRunner().invoke(main, ["calibrate", "--refit", str(saved), "--out", str(out)])
    assert again.exit_code == 0, again.output
    refitted = load_coefficients(out)
    assert refitted.router_core_s_per_query == 0.00123
    assert dataclasses.replace(refitted, router_core_s_per_query=coeffs.router_core_s_per_query) == coeffs
