"""Fit the sizing planner's `Coefficients` to measured builds, and predict what it then expects.

The fit inverts the planner's own formulas (loadtest.sizing), so whatever it fits is exactly what
`plan` will use:

- Memory: bytes held against n is a line, fixed + n * per_vector. With two or more sizes the slope
  comes from least squares, so fixed costs (hnswlib's label locks, faiss's centroids, codebooks and
  precomputed table) drop out whatever they really are; with one size the planner's own fixed cost is
  subtracted. What the slope has beyond the layout's exact bytes becomes hnsw_overhead_bytes_per_vector,
  or for ivf_pq a fraction of the code + id bytes (ivfpq_list_slack_fraction). flat has no memory
  coefficient; its residual is reported only.
- Build and QPS: the planner scales a per-core rate at the reference point to other sizes. Every
  measurement is scaled back to the reference point with the planner's factor (the model evaluated
  with the coefficient set to 1), and the coefficient is the geometric mean over sizes (least squares
  in log space), so a single reference measurement gives itself. For hnsw with two or more sizes, how
  the rates change with size is fitted first, as exponents of n (least squares of log rate over log n):
  on a real machine a graph that outgrows the CPU caches slows down faster than log n.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from loadtest.sizing import (
    Coefficients,
    SizingInput,
    _build_core_s_per_vector,
    _layout,
    _qps_per_core,
    ivf_list_slack_fraction,
    plan,
)

_PREFIX = {"flat": "flat", "hnsw": "hnsw", "ivf_pq": "ivfpq"}


@dataclass(frozen=True)
class Reference:
    """The point the fitted rates hold at, and the index parameters every measurement used."""

    vectors: int
    dim: int
    hnsw_m: int = 16
    ivf_nlist: int = 4096
    ivf_nprobe: int = 16
    pq_m: int = 16
    pq_nbits: int = 8


@dataclass(frozen=True)
class Measurement:
    kind: str
    n: int
    rss_bytes: int  # RSS growth of a fresh process while it built and held the index
    build_core_s: float  # CPU seconds, all threads, to add the n vectors (IVF training apart)
    qps_per_core: float  # single queries from one thread, per CPU second
    library_bytes: int = 0  # the library's own serialized size, for comparison
    build_wall_s: float = 0.0
    train_core_s: float = 0.0
    qps_wall: float = 0.0
    recall_at_10: float | None = None
    queries_timed: int = 0


def sizing_input(kind: str, n: int, ref: Reference) -> SizingInput:
    """A one-shard, index-only input at n vectors (no ids, metadata or RAM limit in the way)."""
    return SizingInput(
        vectors=n, dim=ref.dim, index_kind=kind, hnsw_m=ref.hnsw_m, ivf_nlist=ref.ivf_nlist, ivf_nprobe=ref.ivf_nprobe,
        pq_m=ref.pq_m, pq_nbits=ref.pq_nbits, metric="l2", id_bytes_per_point=0, node_ram_bytes=2**62, node_cores=1,
    )


def line_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y over x; needs two distinct x."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a line needs at least two distinct sizes")
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


def _geomean(values: Sequence[float]) -> float:
    if not values or min(values) <= 0:
        raise ValueError(f"rates must be positive to fit, got {list(values)}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def with_reference(coeffs: Coefficients, ref: Reference) -> Coefficients:
    return dataclasses.replace(
        coeffs, ref_vectors=ref.vectors, ref_dim=ref.dim, ref_ivf_nlist=ref.ivf_nlist, ref_ivf_nprobe=ref.ivf_nprobe,
        ref_pq_m=ref.pq_m, ref_pq_nbits=ref.pq_nbits,
    )


def fit_coefficients(
    measurements: Sequence[Measurement], ref: Reference, *, machine: str, notes: str = "",
    base: Coefficients | None = None,
) -> tuple[Coefficients, dict[str, Any]]:
    """Coefficients for the kinds measured (others keep `base`'s values) and per-kind fit details."""
    coeffs = dataclasses.replace(with_reference(base or Coefficients(), ref), machine=machine, measured=True, notes=notes)
    details: dict[str, Any] = {}
    for kind in sorted({m.kind for m in measurements}):
        ms = [m for m in measurements if m.kind == kind]
        prefix = _PREFIX[kind]
        exact = dataclasses.replace(coeffs, hnsw_overhead_bytes_per_vector=0.0, ivfpq_list_slack_fraction=0.0)
        layout = _layout(sizing_input(kind, ref.vectors, ref), exact)
        if kind == "ivf_pq" and len({m.n for m in ms}) >= 2:
            # The lists' resident slack per point changes with their length (sizing.ivf_list_slack_fraction):
            # fit the fraction at the reference as the slope over the slack each size would carry.
            entry = layout.code_bytes + layout.label_bytes
            at_ref = dataclasses.replace(exact, ivfpq_list_slack_fraction=1.0)
            xs = [m.n * entry * ivf_list_slack_fraction(at_ref, m.n / ref.ivf_nlist * entry) for m in ms]
            fraction, intercept = line_fit([(x, m.rss_bytes - m.n * layout.per_vector) for x, m in zip(xs, ms)])
            per_vector = layout.per_vector + fraction * entry
        elif len({m.n for m in ms}) >= 2:
            per_vector, intercept = line_fit([(m.n, m.rss_bytes) for m in ms])
        else:
            per_vector, intercept = (ms[0].rss_bytes - layout.fixed_per_shard) / ms[0].n, float(layout.fixed_per_shard)
        residual = per_vector - layout.per_vector
        info: dict[str, Any] = {
            "bytes_per_vector": per_vector, "fixed_bytes_fitted": intercept, "fixed_bytes_model": layout.fixed_per_shard,
            "layout_exact_bytes_per_vector": layout.per_vector, "residual_bytes_per_vector": residual,
        }
        if kind == "hnsw":
            coeffs = dataclasses.replace(coeffs, hnsw_overhead_bytes_per_vector=residual)
        elif kind == "ivf_pq":
            coeffs = dataclasses.replace(coeffs, ivfpq_list_slack_fraction=residual / (layout.code_bytes + layout.label_bytes))

        if kind == "hnsw" and len({m.n for m in ms}) >= 2:
            qps_exponent = -line_fit([(math.log(m.n), math.log(m.qps_per_core)) for m in ms])[0]
            build_exponent = line_fit([(math.log(m.n), math.log(m.build_core_s / m.n)) for m in ms])[0]
            coeffs = dataclasses.replace(coeffs, hnsw_qps_size_exponent=qps_exponent, hnsw_build_size_exponent=build_exponent)
            info.update(qps_size_exponent=qps_exponent, build_size_exponent=build_exponent)
        unit = dataclasses.replace(coeffs, **{f"{prefix}_build_core_s_per_vector": 1.0, f"{prefix}_qps_per_core": 1.0})
        build_at_ref = [m.build_core_s / m.n / _build_core_s_per_vector(sizing_input(kind, m.n, ref), unit, m.n) for m in ms]
        qps_at_ref = [m.qps_per_core / _qps_per_core(sizing_input(kind, m.n, ref), unit, m.n) for m in ms]
        coeffs = dataclasses.replace(
            coeffs, **{f"{prefix}_build_core_s_per_vector": _geomean(build_at_ref), f"{prefix}_qps_per_core": _geomean(qps_at_ref)}
        )
        info.update(build_core_s_per_vector_at_ref_by_size=build_at_ref, qps_per_core_at_ref_by_size=qps_at_ref)
        details[kind] = info
    return coeffs, details


@dataclass(frozen=True)
class Prediction:
    bytes_per_vector: float  # index bytes / n, fixed per-shard structures included
    build_core_s_per_vector: float
    qps_per_core: float


def predict(kind: str, n: int, ref: Reference, coeffs: Coefficients) -> Prediction:
    inp = sizing_input(kind, n, ref)
    return Prediction(
        bytes_per_vector=plan(inp, coeffs).index_bytes / n,
        build_core_s_per_vector=_build_core_s_per_vector(inp, coeffs, n),
        qps_per_core=_qps_per_core(inp, coeffs, n),
    )


def percent_error(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured if measured else math.inf
