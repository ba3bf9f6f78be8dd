"""A load test's report: one JSON-ready dict, and a readable table of the same figures.

Recall@k is over calls: each call's returned ids against its own exact ground truth (the filtered
brute force for filtered calls), averaged, and split by filtered and unfiltered calls. Ids that are
not base row numbers count as misses. With keep_ids the returned ids go into the report too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loadtest.outcomes import Returned, Tally
from loadtest.phases import LoadResult, PhaseResult
from loadtest.workload import FILTER_FIELD, Workload

REPORT_VERSION = 1


def recall(tally: Tally, k: int) -> dict[str, Any]:
    """Recall@k over the scored calls: all of them, and the unfiltered and filtered ones apart."""
    def ratio(hits: int, calls: int) -> float | None:
        return hits / (calls * k) if calls else None

    return {
        "k": k,
        "all": ratio(sum(tally.recall_hits.values()), sum(tally.recall_calls.values())),
        "unfiltered": ratio(tally.recall_hits["unfiltered"], tally.recall_calls["unfiltered"]),
        "filtered": ratio(tally.recall_hits["filtered"], tally.recall_calls["filtered"]),
        "calls_scored": sum(tally.recall_calls.values()),
    }


def tally_report(tally: Tally, elapsed_s: float) -> dict[str, Any]:
    return {
        "sent": tally.sent,
        "completed": tally.completed,
        "items": tally.items,
        "elapsed_s": elapsed_s,
        "throughput_per_s": tally.completed / elapsed_s if elapsed_s > 0 else 0.0,
        "error_count": tally.error_count,
        "errors": dict(sorted(tally.errors.items())),
        "partial": tally.partial,
        "latency_ms": tally.latency.summary(),
        "hdr": tally.latency.encode(),
    }


def phase_report(phase: PhaseResult, workload: Workload) -> dict[str, Any]:
    s = phase.settings
    queries = tally_report(phase.queries, phase.elapsed_s)
    queries["qps"] = queries.pop("throughput_per_s")
    queries.update(
        mode=s.mode,
        concurrency=s.concurrency if s.mode == "closed" else None,
        target_qps=s.rate if s.mode == "open" else None,
        duration_s=s.duration,
        warmup_s=s.warmup,
        latency_from="intended send time" if s.mode == "open" else "send time",
        knobs={"ef_search": s.ef_search, "nprobe": s.nprobe},
        filter=None if workload.selectivity is None else {
            "field": FILTER_FIELD, "eq": 0, "selectivity": workload.selectivity,
            "fraction_of_queries": workload.filter_fraction, "selected_points": workload.selected_points,
        },
        recall=recall(phase.queries, workload.k),
    )
    if s.keep_ids:
        queries["returned"] = returned_json(phase.queries.returned)
    report: dict[str, Any] = {"queries": queries, "writes": None, "generator_cpu_percent": phase.generator_cpu_percent}
    if phase.writes is not None:
        writes = tally_report(phase.writes, phase.writes_elapsed_s or 0.0)
        writes["points_per_s"] = phase.writes.items / phase.writes_elapsed_s if phase.writes_elapsed_s else 0.0
        writes["target_points_per_s"] = s.write_rate
        writes["batch"] = s.write_batch
        report["writes"] = writes
    return report


def returned_json(returned: Sequence[Returned]) -> list[dict[str, Any]]:
    return [{"row": r.row, "filtered": r.filtered, "ids": list(r.ids)} for r in returned]


def base_report(dataset: dict[str, Any], collection: dict[str, Any], load: LoadResult | None) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "dataset": dataset,
        "collection": collection,
        "load": None if load is None else {
            "vectors": load.vectors, "seconds": load.seconds, "vectors_per_s": load.vectors_per_s,
        },
    }


def write_json(report: dict[str, Any], path: Path | None) -> str:
    text = json.dumps(report, indent=2) + "\n"
    if path is not None:
        path.write_text(text)
    return text


# -- the readable table ---------------------------------------------------------------------------


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _latency_line(latency: dict[str, Any]) -> str:
    return "  ".join(f"{name} {_num(latency[name], 3)}" for name in ("p50", "p90", "p99", "p99_9", "max")) + " ms"


def format_report(report: dict[str, Any]) -> str:
    data, coll = report["dataset"], report["collection"]
    lines = [
        f"dataset     {data['name']}: {data['base']:,} x {data['dim']}-d {data['metric']}, {data['queries']:,} queries"
        + (" (SYNTHETIC)" if data.get("synthetic") else ""),
        f"collection  {coll['name']}: {coll['index']} {coll['params'] or ''} shards={coll['shards']} rf={coll['replication_factor']}",
    ]
    if report.get("load"):
        load = report["load"]
        lines.append(f"bulk load   {load['vectors']:,} vectors in {load['seconds']:.1f} s = {load['vectors_per_s']:,.0f} vectors/s")
    if report.get("memory"):
        lines += _memory_lines(report["memory"])
    if report.get("queries"):
        lines += _phase_lines(report)
    if report.get("sweep"):
        lines.append(format_sweep(report["sweep"]))
    return "\n".join(lines)


def _memory_lines(memory: dict[str, Any]) -> list[str]:
    est = memory["shard_estimates"]
    lines = [
        f"memory      shards' own estimate: index {_num(est['index_bytes_per_vector'], 1)} B/vector, metadata + id map "
        f"{_num(est['metadata_and_id_bytes_per_vector'], 1)} B/vector ({est['points']:,} points in {est['partitions']} "
        f"partitions{'' if est['trained'] else ', NOT all trained'})"
    ]
    if "shard_rss_bytes_per_vector" in memory:
        lines.append(f"            shard processes' RSS growth over the load: {memory['shard_rss_bytes_per_vector']:,.1f} B/vector "
                     f"({memory['shard_rss_growth_bytes'] / 2**20:,.1f} MiB)")
    return lines


def _phase_lines(phase: dict[str, Any]) -> list[str]:
    q = phase["queries"]
    how = f"closed loop, {q['concurrency']} clients" if q["mode"] == "closed" else f"open loop, target {q['target_qps']:,.0f} QPS (Poisson)"
    lines = [
        f"queries     {how}, {q['duration_s']:g} s, knobs {q['knobs']}",
        f"  QPS       {q['qps']:,.1f} ({q['completed']:,} completed of {q['sent']:,} sent in {q['elapsed_s']:.2f} s)",
        f"  latency   {_latency_line(q['latency_ms'])} (from {q['latency_from']})",
    ]
    if q["filter"]:
        f = q["filter"]
        lines.append(f"  filter    {f['field']} == 0 selects {f['selected_points']:,} points (s={f['selectivity']:g}) on {f['fraction_of_queries']:.0%} of queries")
    if q["recall"] is not None:
        r = q["recall"]
        lines.append(f"  recall@{r['k']}  all {_num(r['all'], 4)}  unfiltered {_num(r['unfiltered'], 4)}  filtered {_num(r['filtered'], 4)}")
    lines.append(f"  errors    {q['error_count']:,} {q['errors'] or ''}  partial results {q['partial']:,}")
    lines.append(f"  generator CPU {phase['generator_cpu_percent']:.0f}% of one core")
    w = phase.get("writes")
    if w:
        lines += [
            f"writes      {w['points_per_s']:,.1f} points/s (target {w['target_points_per_s']:,.0f}, batches of {w['batch']})",
            f"  latency   {_latency_line(w['latency_ms'])}",
            f"  errors    {w['error_count']:,} {w['errors'] or ''}",
        ]
    return lines


def format_sweep(sweep: dict[str, Any]) -> str:
    lines = [f"sweep over {sweep['knob']} (* = on the recall/QPS frontier)"]
    header = f"  {'':1} {'who':<8} {sweep['knob']:>10} {'recall@k':>9} {'QPS':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    lines.append(header)
    for who, rows in (("cluster", sweep["frontier"]), ("raw", sweep.get("raw") or [])):
        for row in rows:
            lines.append(
                f"  {'*' if row['pareto'] else ' '} {who:<8} {row['value']:>10} {_num(row['recall'], 4):>9} {_num(row['qps'], 1):>10} "
                f"{_num(row['p50_ms'], 3):>8} {_num(row['p99_ms'], 3):>8} {row['errors']:>7}"
            )
    if sweep.get("raw_note"):
        lines.append(f"  raw: {sweep['raw_note']}")
    return "\n".join(lines)
