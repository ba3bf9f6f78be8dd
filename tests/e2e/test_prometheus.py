"""A real Prometheus server (Debian's `prometheus` package, installed by scripts/setup.sh) scraping a local
cluster's /metrics while a query load runs; the per-RPC request rates are read back through its HTTP query
API, as a dashboard would read them."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from quiver.client import Client
from quiver.local_cluster import LocalCluster, free_port

DIM = 8


def query(prometheus: str, promql: str) -> list[dict]:
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    metrics = ("--metrics-port", "0")
    with LocalCluster(Path(tmp_path_factory.mktemp("prom-cluster")), shards=2, shard_args=metrics, router_args=metrics) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory):
    binary = shutil.which("prometheus")
    assert binary, "no prometheus binary: scripts/setup.sh installs Debian's prometheus package"
    root = tmp_path_factory.mktemp("prometheus")
    targets = {"router": [cluster.router.metrics_address], "shard": [s.metrics_address for s in cluster.shard_servers]}  # type: ignore[union-attr]
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": f"quiver-{job}", "static_configs": [{"targets": t}]} for job, t in targets.items()]}
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    address = f"127.0.0.1:{free_port('127.0.0.1')}"
    log = open(root / "prometheus.log", "wb")
    process = subprocess.Popen(
        [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address={address}"], stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (root / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not get ready in 60 s"
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_prometheus_reads_per_rpc_request_rates_and_partition_points_from_a_loaded_cluster(cluster: LocalCluster, prometheus: str):
    vectors = np.random.default_rng(0).standard_normal((200, DIM)).astype(np.float32)
    with Client(cluster.router_address) as client:
        client.create_collection("prom", DIM, index="flat", shards=2)
        client.upsert("prom", [f"p{i}" for i in range(200)], vectors)
        rate = 'sum(rate(quiver_rpc_requests_total{service="quiver.v1.Router",method="Search",code="OK"}[5s]))'
        deadline = time.monotonic() + 60
        result: list[dict] = []
        while time.monotonic() < deadline:
            for n in range(20):  # keep the load on while Prometheus scrapes
                client.search("prom", vectors[n], 3)
            result = query(prometheus, rate)
            if result and float(result[0]["value"][1]) > 0:
                break
            time.sleep(0.5)
    assert result and float(result[0]["value"][1]) > 0, result
    up = query(prometheus, "up")
    assert len(up) == 3 and all(r["value"][1] == "1" for r in up), up
    shard_searches = query(prometheus, 'sum(quiver_rpc_requests_total{service="quiver.v1.Shard",method="Search"})')
    assert float(shard_searches[0]["value"][1]) > 0
    points = query(prometheus, 'sum(quiver_shard_partition_points{collection="prom"})')
    assert float(points[0]["value"][1]) == 200
