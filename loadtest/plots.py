"""PNG charts from a report dict alone (the HDR histograms travel in it): latency CDF, recall vs QPS.

matplotlib's Agg backend, so no display is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from loadtest.latency import LatencyHistogram  # noqa: E402


def _phases(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if report.get("sweep"):
        knob = report["sweep"]["knob"]
        return [(f"{knob}={p['knob'][knob]}", p) for p in report["sweep"]["points"]]
    return [("searches", report)] if report.get("queries") else []


def plot_latency_cdf(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, phase in _phases(report):
        q = phase["queries"]
        cdf = LatencyHistogram.decode(q["hdr"]).cdf() if q["completed"] else []
        if cdf:
            ax.step([ms for ms, _ in cdf], [f for _, f in cdf], where="post", label=f"{label} (p99 {q['latency_ms']['p99']:.2f} ms)")
        if phase.get("writes") and phase["writes"]["completed"]:
            wcdf = LatencyHistogram.decode(phase["writes"]["hdr"]).cdf()
            ax.step([ms for ms, _ in wcdf], [f for _, f in wcdf], where="post", linestyle="--", label="writes" if label == "searches" else f"{label} writes")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of calls at or below")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"Latency CDF: {report['dataset']['name']}, {report['collection']['index']}, {report['collection']['shards']} shards")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_frontier(report: dict[str, Any], path: Path) -> Path:
    sweep = report["sweep"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    coll, first = report["collection"], sweep["points"][0]["queries"]
    load = f"{first['concurrency']} clients" if first["mode"] == "closed" else f"open loop {first['target_qps']:g}/s"
    series = [(f"cluster: router + {coll['shards']} shards, {load}", sweep["frontier"], "o-")]
    if sweep.get("raw"):
        series.append(("raw in-process index, 1 thread", sweep["raw"], "s--"))
    for label, rows, style in series:
        rows = [r for r in rows if r["recall"] is not None]
        ax.plot([r["recall"] for r in rows], [r["qps"] for r in rows], style, label=label)
        for r in rows:
            ax.annotate(str(r["value"]), (r["recall"], r["qps"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{sweep.get('k', 10)}")
    ax.set_ylabel("queries per second (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    data = report["dataset"]
    ax.set_title(f"{data['name']}{' (synthetic)' if data.get('synthetic') else ''}: recall vs QPS over {sweep['knob']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [plot_latency_cdf(report, directory / "latency_cdf.png")]
    if report.get("sweep"):
        paths.append(plot_frontier(report, directory / "recall_vs_qps.png"))
    return paths
