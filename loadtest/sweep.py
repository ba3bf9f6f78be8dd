"""Sweeps of a search knob (ef_search for hnsw, nprobe for ivf_pq) and the recall/QPS frontier.

Each knob value gets its own query phase (same mode, duration and clients); a point is on the
frontier, as in ann-benchmarks, when no other point has both recall and QPS at least as high (and one
higher). The raw in-process index, when measured, is its own series with its own frontier.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from loadtest.phases import QuerySettings, query_phase
from loadtest.report import phase_report
from loadtest.workload import Workload
from quiver.client import AsyncClient

KNOBS = ("ef_search", "nprobe")


def parse_sweep(text: str) -> tuple[str, list[int]]:
    """'ef_search=16,32,64' -> ('ef_search', [16, 32, 64])."""
    knob, sep, values = text.partition("=")
    knob = knob.strip()
    if not sep or knob not in KNOBS:
        raise ValueError(f"expected KNOB=V1,V2,... with KNOB one of {KNOBS}, got {text!r}")
    try:
        parsed = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"knob values must be integers: {text!r}") from None
    if not parsed or min(parsed) < 1:
        raise ValueError(f"need at least one knob value >= 1: {text!r}")
    return knob, parsed


def pareto_flags(points: Sequence[tuple[float | None, float]]) -> list[bool]:
    """For (recall, qps) points: True where no other point dominates (>= both, > one)."""
    flags = []
    for recall, qps in points:
        if recall is None:
            flags.append(False)
            continue
        dominated = any(
            other_recall is not None and other_recall >= recall and other_qps >= qps and (other_recall > recall or other_qps > qps)
            for other_recall, other_qps in points
        )
        flags.append(not dominated)
    return flags


def with_pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flags = pareto_flags([(row["recall"], row["qps"]) for row in rows])
    return [dict(row, pareto=flag) for row, flag in zip(rows, flags)]


def frontier_row(value: int, phase: dict[str, Any]) -> dict[str, Any]:
    q = phase["queries"]
    return {
        "value": value, "recall": q["recall"]["all"], "qps": q["qps"], "p50_ms": q["latency_ms"]["p50"],
        "p99_ms": q["latency_ms"]["p99"], "errors": q["error_count"],
    }


async def run_sweep(
    client: AsyncClient, collection: str, workload: Workload, settings: QuerySettings, knob: str, values: Sequence[int],
    progress: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(phase reports, frontier rows), one of each per knob value, in the order given."""
    phases, rows = [], []
    for value in values:
        knobbed = dataclasses.replace(settings, **{knob: value})
        phase = phase_report(await query_phase(client, collection, workload, knobbed), workload)
        phase["knob"] = {knob: value}
        phases.append(phase)
        rows.append(frontier_row(value, phase))
        if progress is not None:
            progress(rows[-1])
    return phases, with_pareto(rows)
