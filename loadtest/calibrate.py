"""Calibrate the sizing planner on this machine: real in-process builds, a fit, and a validation.

Every build runs in a fresh process (multiprocessing spawn), on SYNTHETIC Gaussian-mixture data
(loadtest.datasets.gaussian_mixture, L2), with the libraries configured as a Quiver shard uses them:

- hnsw: hnswlib, sized for exactly n elements, add_items on every core.
- ivf_pq: faiss IndexIVFPQ over a flat L2 quantizer, trained on min(n, max(39 * nlist, 10000))
  vectors (the shard's default train_size), then add_with_ids; no direct map (the shard keeps its own
  label -> list column, shard/indexes/ivf_lists.py, which `calibrate-served` counts with the shard).
- flat: faiss IndexFlatL2.

What is measured, and why that way:

- Memory: the growth of the process's resident set (RSS) from just before the index is created to
  just after it is built, each reading taken after gc and glibc malloc_trim, with the BLAS and
  OpenMP pools started beforehand (their buffers belong to the process, not to an index). The planner predicts
  RAM, and RSS is what the index really holds in RAM: hnswlib's per-element mutexes, level array and
  label map, faiss's list slack, allocator overhead. The libraries' own
  serialized sizes (hnswlib index_file_size, faiss serialize_index) leave all of that out; they are
  recorded next to it for comparison. A fresh process per build keeps memory freed by an earlier
  build from being reused and hiding growth.
- Build: CPU seconds of the process (all threads) while adding the vectors, per vector: core-seconds,
  what the planner divides by a node's cores. IVF training is a fixed cost, recorded apart.
- QPS per core: one query at a time from one thread (hnswlib num_threads=1, faiss one OpenMP
  thread), for a few seconds, queries over CPU seconds. hnsw at the given ef_search, ivf_pq at the
  given nprobe; recall@10 against exact ground truth is recorded so the rate has a meaning.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from loadtest.calibration_fit import Measurement, Reference, fit_coefficients, percent_error, predict
from loadtest.machine import describe_machine, machine_line
from loadtest.sizing import Coefficients, load_coefficients, save_coefficients
from shard.heap_release import release_free_heap

KINDS = ("hnsw", "ivf_pq", "flat")
RECALL_QUERIES = 200


@dataclass(frozen=True)
class CalibrationParams:
    dim: int = 128
    clusters: int = 256
    seed: int = 7
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    nlist: int = 4096
    nprobe: int = 16
    pq_m: int = 16
    nbits: int = 8
    queries: int = 1000
    qps_seconds: float = 5.0

    def reference(self, vectors: int) -> Reference:
        return Reference(vectors, self.dim, self.hnsw_m, self.nlist, self.nprobe, self.pq_m, self.nbits)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _settle() -> None:
    """Give freed memory back to the OS so RSS readings show what is held, not what was once used."""
    gc.collect()
    release_free_heap()


def _warm_up(dim: int) -> None:
    """Touch the BLAS and OpenMP thread pools once, so their buffers are in the baseline, not the index."""
    import faiss

    rng = np.random.default_rng(0)
    faiss.knn(rng.random((256, dim), dtype=np.float32), rng.random((1024, dim), dtype=np.float32), 4)
    kmeans = faiss.Kmeans(dim, 4, niter=2, verbose=False)
    kmeans.train(rng.random((1024, dim), dtype=np.float32))


def measure(kind: str, n: int, params: CalibrationParams) -> Measurement:
    """Build one index of n vectors in this process and measure it (call it in a fresh process)."""
    import faiss
    import hnswlib

    from loadtest.datasets import exact_ground_truth, gaussian_mixture

    data = gaussian_mixture(n, params.dim, params.clusters, params.seed, params.queries, "l2", gt_k=0)
    base, queries = data.base, data.queries
    cores = faiss.omp_get_max_threads()
    _warm_up(params.dim)
    _settle()
    rss_before = _rss_bytes()
    train_cpu = 0.0
    search: Callable[[np.ndarray], np.ndarray]
    if kind == "hnsw":
        index = hnswlib.Index(space="l2", dim=params.dim)
        index.init_index(max_elements=n, M=params.hnsw_m, ef_construction=params.ef_construction, random_seed=params.seed)
        cpu, wall = time.process_time(), time.perf_counter()
        index.add_items(base, np.arange(n), num_threads=-1)
        build_cpu, build_wall = time.process_time() - cpu, time.perf_counter() - wall
        index.set_ef(params.ef_search)

        def search(q: np.ndarray) -> np.ndarray:
            return index.knn_query(q, k=10, num_threads=1)[0]

        def library_bytes() -> int:
            return int(index.index_file_size())
    elif kind in ("ivf_pq", "flat"):
        if kind == "ivf_pq":
            quantizer = faiss.IndexFlatL2(params.dim)
            index = faiss.IndexIVFPQ(quantizer, params.dim, params.nlist, params.pq_m, params.nbits)
            cpu = time.process_time()
            index.train(base[: min(n, max(39 * params.nlist, 10_000))])
            train_cpu = time.process_time() - cpu
            index.nprobe = params.nprobe
            cpu, wall = time.process_time(), time.perf_counter()
            index.add_with_ids(base, np.arange(n, dtype=np.int64))
        else:
            index = faiss.IndexFlatL2(params.dim)
            cpu, wall = time.process_time(), time.perf_counter()
            index.add(base)
        build_cpu, build_wall = time.process_time() - cpu, time.perf_counter() - wall

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q, 10)[1]

        def library_bytes() -> int:
            return int(faiss.serialize_index(index).size)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    _settle()
    rss = _rss_bytes() - rss_before

    faiss.omp_set_num_threads(1)
    found: list[np.ndarray] = []
    calls = 0
    cpu, wall = time.process_time(), time.perf_counter()
    while calls < 10 or time.perf_counter() - wall < params.qps_seconds:
        row = calls % len(queries)
        labels = search(queries[row : row + 1])
        if calls < RECALL_QUERIES and calls < len(queries):
            found.append(labels[0])
        calls += 1
    qps_cpu, qps_wall = time.process_time() - cpu, time.perf_counter() - wall
    faiss.omp_set_num_threads(cores)
    truth = exact_ground_truth(base, queries[: len(found)], 10, "l2")
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return Measurement(
        kind=kind, n=n, rss_bytes=rss, build_core_s=build_cpu, qps_per_core=calls / max(qps_cpu, 1e-9),
        library_bytes=library_bytes(), build_wall_s=build_wall, train_core_s=train_cpu, qps_wall=calls / qps_wall,
        recall_at_10=hits / (10 * len(found)), queries_timed=calls,
    )


def measure_in_fresh_process(kind: str, n: int, params: CalibrationParams) -> Measurement:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, kind, n, params).result()


def calibrate(
    sizes: Sequence[int], validate: Sequence[int], kinds: Sequence[str], params: CalibrationParams, out: Path,
    *, tolerance_percent: float = 15.0, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure, fit, validate; write the coefficients to `out` and the details next to it."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)}")
    if not sizes:
        raise ValueError("need at least one calibration size")
    machine = describe_machine()
    measured: list[Measurement] = []
    for kind in kinds:
        for n in sorted(sizes):
            log(f"measuring {kind} at {n:,} x {params.dim} (synthetic) ...")
            measured.append(measure_in_fresh_process(kind, n, params))
            log("  " + format_measurement(measured[-1]))
    checks: list[Measurement] = []
    for kind in kinds:
        for n in validate:
            log(f"validating {kind} at {n:,} x {params.dim} (synthetic) ...")
            checks.append(measure_in_fresh_process(kind, n, params))
            log("  " + format_measurement(checks[-1]))
    return fit_and_write(measured, checks, params, machine, out, tolerance_percent=tolerance_percent)


def fit_and_write(
    measured: Sequence[Measurement], checks: Sequence[Measurement], params: CalibrationParams, machine: dict[str, Any],
    out: Path, *, tolerance_percent: float = 15.0, base: Coefficients | None = None,
) -> dict[str, Any]:
    """Fit on `measured`, validate on `checks`; write the coefficients (over `base`'s) to `out`, the details beside."""
    sizes = sorted({m.n for m in measured})
    kinds = list(dict.fromkeys(m.kind for m in measured))
    validate = sorted({m.n for m in checks})
    ref = params.reference(max(sizes))
    coeffs, fit = fit_coefficients(measured, ref, machine=machine_line(machine), base=base)
    validation = [_validation_row(m, ref, coeffs, tolerance_percent) for m in checks]
    coeffs = dataclasses.replace(coeffs, notes=_notes(sizes, validate, kinds, params, ref, measured, validation, tolerance_percent))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_coefficients(coeffs, out)
    details = {
        "synthetic": True,
        "dataset": f"gaussian_mixture(dim={params.dim}, clusters={params.clusters}, seed={params.seed}, metric=l2)",
        "machine": machine,
        "params": dataclasses.asdict(params),
        "sizes": list(sizes),
        "reference_vectors": ref.vectors,
        "measurements": [dataclasses.asdict(m) for m in measured],
        "fit": fit,
        "coefficients": dataclasses.asdict(coeffs),
        "validation": validation,
        "tolerance_percent": tolerance_percent,
    }
    details_path(out).write_text(json.dumps(details, indent=2) + "\n")
    return details


def refit(details: dict[str, Any], out: Path, *, tolerance_percent: float | None = None) -> dict[str, Any]:
    """The fit and validation again from a run's details (after a change to the model), measuring nothing.
    `out`'s other coefficients (the served calibration's) are kept: refit that too, it is fitted over these."""
    base = load_coefficients(out) if out.exists() else None
    params = CalibrationParams(**details["params"])
    measured = [Measurement(**m) for m in details["measurements"]]
    checks = [Measurement(**v["measurement"]) for v in details["validation"]]
    return fit_and_write(measured, checks, params, details["machine"], out, base=base,
                         tolerance_percent=details.get("tolerance_percent", 15.0) if tolerance_percent is None else tolerance_percent)


def details_path(out: Path) -> Path:
    return out.with_name(out.stem + ".details.json")


def _validation_row(m: Measurement, ref: Reference, coeffs: Coefficients, tolerance: float) -> dict[str, Any]:
    p = predict(m.kind, m.n, ref, coeffs)
    measured_bpv = m.rss_bytes / m.n
    error = percent_error(p.bytes_per_vector, measured_bpv)
    return {
        "kind": m.kind, "n": m.n,
        "bytes_per_vector_predicted": p.bytes_per_vector, "bytes_per_vector_measured": measured_bpv,
        "memory_error_percent": error, "memory_within_tolerance": abs(error) <= tolerance,
        "build_core_s_per_vector_predicted": p.build_core_s_per_vector,
        "build_core_s_per_vector_measured": m.build_core_s / m.n,
        "build_error_percent": percent_error(p.build_core_s_per_vector, m.build_core_s / m.n),
        "qps_per_core_predicted": p.qps_per_core, "qps_per_core_measured": m.qps_per_core,
        "qps_error_percent": percent_error(p.qps_per_core, m.qps_per_core),
        "measurement": dataclasses.asdict(m),
    }


def _notes(
    sizes: Sequence[int], validate: Sequence[int], kinds: Sequence[str], params: CalibrationParams, ref: Reference,
    measured: Sequence[Measurement], validation: Sequence[dict[str, Any]], tolerance: float,
) -> str:
    recall = {m.kind: m.recall_at_10 for m in measured if m.n == ref.vectors}
    parts = [
        f"Measured by `quiver-loadtest calibrate` on SYNTHETIC Gaussian-mixture data ({params.dim}-d, "
        f"{params.clusters} clusters, seed {params.seed}, L2) at sizes {', '.join(f'{n:,}' for n in sorted(sizes))}; "
        f"reference point {ref.vectors:,} vectors. Kinds measured: {', '.join(kinds)}"
        + (f"; not measured (estimates kept): {', '.join(k for k in KINDS if k not in kinds)}" if set(kinds) != set(KINDS) else "")
        + ".",
        "Memory: RSS growth of a fresh process building and holding the index (after malloc_trim), slope over "
        "sizes; ivf_pq without a direct map (the shard keeps its own label column, which the served calibration counts).",
        "Build: process CPU seconds of adding the vectors (IVF training apart). QPS: one query at a time from one "
        "thread, per CPU second.",
        f"hnsw M={params.hnsw_m} ef_construction={params.ef_construction} ef_search={params.ef_search}"
        + (f" (recall@10 {recall['hnsw']:.3f})" if recall.get("hnsw") is not None else "")
        + f"; ivf_pq nlist={params.nlist} nprobe={params.nprobe} m={params.pq_m} nbits={params.nbits}"
        + (f" (recall@10 {recall['ivf_pq']:.3f})" if recall.get("ivf_pq") is not None else "") + ".",
    ]
    if validation:
        checks = "; ".join(
            f"{v['kind']} at {v['n']:,}: predicted {v['bytes_per_vector_predicted']:.1f} B/vector, measured "
            f"{v['bytes_per_vector_measured']:.1f} ({v['memory_error_percent']:+.1f}%)" for v in validation
        )
        parts.append(f"Validation (memory, tolerance {tolerance:g}%): {checks}.")
    return " ".join(parts)


# -- output -----------------------------------------------------------------------------------------


def format_measurement(m: Measurement) -> str:
    recall = f", recall@10 {m.recall_at_10:.3f}" if m.recall_at_10 is not None else ""
    return (f"{m.kind} n={m.n:,}: RSS +{m.rss_bytes / 2**20:,.1f} MiB ({m.rss_bytes / m.n:,.1f} B/vector; library's own "
            f"size {m.library_bytes / m.n:,.1f} B/vector), build {m.build_core_s:,.2f} core-s ({m.build_wall_s:,.2f} s wall"
            f"{f', training {m.train_core_s:,.2f} core-s' if m.train_core_s else ''}), "
            f"{m.qps_per_core:,.0f} QPS/core{recall}")


def format_summary(details: dict[str, Any]) -> str:
    c = details["coefficients"]
    lines = [
        f"machine: {c['machine']}",
        f"data: {details['dataset']} (SYNTHETIC)",
        f"reference point: {details['reference_vectors']:,} x {c['ref_dim']}-d",
        "fitted coefficients:",
    ]
    for key in ("hnsw_overhead_bytes_per_vector", "ivfpq_list_slack_fraction", "flat_build_core_s_per_vector",
                "hnsw_build_core_s_per_vector", "ivfpq_build_core_s_per_vector", "flat_qps_per_core",
                "hnsw_qps_per_core", "ivfpq_qps_per_core"):
        lines.append(f"  {key:<34} {c[key]:.6g}")
    for kind, fit in details["fit"].items():
        lines.append(f"  {kind}: {fit['bytes_per_vector']:,.1f} B/vector measured slope vs {fit['layout_exact_bytes_per_vector']:,.1f} "
                     f"in the layout; fixed {fit['fixed_bytes_fitted'] / 2**20:,.2f} MiB fitted vs "
                     f"{fit['fixed_bytes_model'] / 2**20:,.2f} MiB modelled")
    if details["validation"]:
        tol = details["tolerance_percent"]
        lines.append(f"validation at sizes not used in the fit (memory acceptance: within {tol:g}%):")
        lines.append(f"  {'kind':<7} {'n':>12} {'predicted B/vec':>16} {'measured B/vec':>15} {'error':>8}  "
                     f"{'build err':>9} {'QPS err':>8}")
        for v in details["validation"]:
            verdict = "PASS" if v["memory_within_tolerance"] else "FAIL"
            lines.append(f"  {v['kind']:<7} {v['n']:>12,} {v['bytes_per_vector_predicted']:>16,.1f} "
                         f"{v['bytes_per_vector_measured']:>15,.1f} {v['memory_error_percent']:>+7.1f}%  "
                         f"{v['build_error_percent']:>+8.1f}% {v['qps_error_percent']:>+7.1f}%  {verdict}")
    return "\n".join(lines)
