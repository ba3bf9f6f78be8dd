"""The load generator against a real local cluster (etcd, 2 shard servers, a router) on GloVe vectors.

Short runs (a few seconds each): the report's structure and counts, and its recall recomputed
independently, by brute force in numpy, from the ids the calls returned.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from loadtest.datasets import load_glove50
from loadtest.phases import CollectionSetup, QuerySettings, bulk_load, query_phase
from loadtest.report import format_report, phase_report
from loadtest.schedule import poisson_offsets
from loadtest.workload import FILTER_FIELD, build_workload
from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster

COLLECTION = "lt"
SELECTIVITY = 0.2
LATENCY_KEYS = {"count", "mean", "p50", "p90", "p99", "p99_9", "max"}


@pytest.fixture(scope="module")
def data():
    return load_glove50(n_base=5000, n_queries=200, gt_k=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), shards=2) as running:
        yield running


@pytest.fixture(scope="module")
async def loaded(cluster, data):
    """The collection, loaded once with the sel_bucket field so both filtered and plain runs can use it."""
    async with AsyncClient(cluster.router_address) as client:
        result = await bulk_load(client, CollectionSetup(COLLECTION, "hnsw", {"m": 16, "ef_construction": 100}, shards=2),
                                 build_workload(data, 10, SELECTIVITY, 0.5), progress=False)
    assert result.vectors == 5000 and result.vectors_per_s > 0
    return cluster


def brute_force_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Cosine top-k in plain numpy, independent of the generator's (faiss-based) ground truth."""
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ b.T), axis=1, kind="stable")[:, :k]


def recomputed_recall(returned: list[dict], data, k: int, allowed: np.ndarray | None = None) -> float:
    rows = sorted({r["row"] for r in returned})
    if allowed is None:
        allowed = np.arange(len(data.base))
    truth = dict(zip(rows, allowed[brute_force_topk(data.base[allowed], data.queries[rows], k)]))
    hits = sum(len(set(truth[r["row"]].tolist()) & {int(i) for i in r["ids"][:k]}) for r in returned)
    return hits / (k * len(returned))


def check_counts(section: dict) -> None:
    assert set(section["latency_ms"]) == LATENCY_KEYS
    assert section["completed"] == section["latency_ms"]["count"] > 0
    assert section["sent"] == section["completed"] + section["error_count"]
    assert isinstance(section["errors"], dict) and section["error_count"] == sum(section["errors"].values())
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in section["errors"].items())
    lat = section["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert isinstance(section["hdr"], str) and section["elapsed_s"] > 0


async def test_closed_loop_report_counts_and_recall_match_brute_force(loaded, data):
    workload = build_workload(data, 10)
    async with AsyncClient(loaded.router_address) as client:
        phase = await query_phase(client, COLLECTION, workload, QuerySettings(mode="closed", duration=3, concurrency=4, keep_ids=True))
    report = phase_report(phase, workload)
    q = report["queries"]
    check_counts(q)
    assert q["mode"] == "closed" and q["concurrency"] == 4 and q["latency_from"] == "send time"
    assert q["qps"] == pytest.approx(q["completed"] / q["elapsed_s"]) and 2.9 < q["elapsed_s"] < 10
    assert q["errors"] == {} and q["partial"] == 0 and q["filter"] is None and report["writes"] is None
    assert len(q["returned"]) == q["completed"] == q["recall"]["calls_scored"]
    assert q["recall"]["filtered"] is None and q["recall"]["unfiltered"] == q["recall"]["all"]
    # Near-ties between the 10th and 11th neighbour may order differently in float32 numpy and faiss.
    assert q["recall"]["all"] == pytest.approx(recomputed_recall(q["returned"], data, 10), abs=2e-3)
    assert q["recall"]["all"] > 0.9
    json.dumps(report)
    assert "QPS" in format_report({"dataset": {"name": "g", "metric": "cosine", "base": 1, "dim": 50, "queries": 1},
                                   "collection": {"name": COLLECTION, "index": "hnsw", "params": {}, "shards": 2,
                                                  "replication_factor": 1}, **report})


async def test_open_loop_sends_on_the_poisson_schedule_with_filters_and_writes(loaded, data):
    workload = build_workload(data, 10, SELECTIVITY, 0.5)
    settings = QuerySettings(mode="open", rate=80, duration=3, seed=4, keep_ids=True, write_rate=100, write_batch=10)
    async with AsyncClient(loaded.router_address) as client:
        phase = await query_phase(client, COLLECTION, workload, settings)
    report = phase_report(phase, workload)
    q, w = report["queries"], report["writes"]
    check_counts(q)
    assert q["sent"] == len(poisson_offsets(80, 3, np.random.default_rng(4)))  # every scheduled call went out
    assert q["mode"] == "open" and q["target_qps"] == 80 and q["latency_from"] == "intended send time"
    assert q["filter"]["field"] == FILTER_FIELD and q["filter"]["selected_points"] == int((workload.buckets == 0).sum())
    filtered = [r for r in q["returned"] if r["filtered"]]
    plain = [r for r in q["returned"] if not r["filtered"]]
    assert filtered and plain
    selected = np.flatnonzero(workload.buckets == 0)
    assert all(int(i) in set(selected.tolist()) for r in filtered for i in r["ids"])
    assert q["recall"]["filtered"] == pytest.approx(recomputed_recall(filtered, data, 10, selected), abs=2e-3)
    assert q["recall"]["unfiltered"] == pytest.approx(recomputed_recall(plain, data, 10), abs=2e-3)
    check_counts(w)
    assert w["sent"] == 30 and w["items"] == 10 * w["completed"]  # 100 points/s in batches of 10 for 3 s


def test_cli_sweep_gives_one_frontier_row_per_knob_value_and_charts(loaded, tmp_path):
    out = tmp_path / "sweep.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtest", "run", "--dataset", "glove-50", "--n-base", "5000", "--queries", "200",
         "--gt-k", "10", "--router", loaded.router_address, "--collection", COLLECTION, "--skip-load",
         "--sweep", "ef_search=10,80", "--duration", "1", "--concurrency", "2", "--with-raw", "--index", "hnsw",
         "--param", "m=16", "--param", "ef_construction=100", "--json", str(out), "--plot", str(tmp_path / "plots")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    sweep = report["sweep"]
    assert sweep["knob"] == "ef_search"
    assert [row["value"] for row in sweep["frontier"]] == [10, 80]
    assert [p["queries"]["knobs"]["ef_search"] for p in sweep["points"]] == [10, 80]
    assert [row["value"] for row in sweep["raw"]] == [10, 80]
    for row in sweep["frontier"] + sweep["raw"]:
        assert 0 < row["recall"] <= 1 and row["qps"] > 0 and isinstance(row["pareto"], bool)
    assert sweep["frontier"][1]["recall"] >= sweep["frontier"][0]["recall"]
    assert report["load"] is None and "recall@k" in result.stdout
    estimates = report["memory"]["shard_estimates"]
    assert estimates["points"] == 5000 and estimates["partitions"] == 2 and estimates["index_bytes_per_vector"] > 4 * 50
    assert (tmp_path / "plots" / "latency_cdf.png").stat().st_size > 0
    assert (tmp_path / "plots" / "recall_vs_qps.png").stat().st_size > 0
