"""deploy/ checked offline: every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field fails), every command line in the manifests and the compose file against the
console scripts' real options (parsed by their own click commands), and the dashboard's and scrape
configuration's metric names and targets against what the processes export."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import quiver.metrics  # noqa: F401 - registers the shared metrics
import router.__main__ as router_main
import shard.__main__ as shard_main
import shard.partition_metrics as partition_metrics

DEPLOY = Path(__file__).parents[2] / "deploy"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported upstream; native gRPC probes are GA since 1.27
COMMANDS: dict[str, click.Command] = {"quiver-shard": shard_main.main, "quiver-router": router_main.main}
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def check_command_line(argv: list[str]) -> None:
    """Parses argv with the console script's own click command: an unknown option or bad value raises."""
    command = COMMANDS[argv[0]]
    args = [re.sub(r"\$\((\w+)\)", "x", a) for a in argv[1:]]  # Kubernetes' $(VAR) expansion
    command.make_context(argv[0], args)


def test_there_are_manifests_for_etcd_shards_routers_and_scraping():
    assert {p.name for p in MANIFESTS} >= {"etcd.yaml", "shard.yaml", "router.yaml", "prometheus.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path):
    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_shards_are_a_stateful_set_with_volumes_a_headless_service_and_the_pod_name_as_server_id():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in documents(DEPLOY / "kubernetes" / "shard.yaml")}
    stateful = docs[("StatefulSet", "quiver-shard")]
    assert docs[("Service", "quiver-shard")]["spec"]["clusterIP"] == "None"
    assert stateful["spec"]["serviceName"] == "quiver-shard"
    assert stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (shard,) = containers(stateful)
    assert "--server-id=$(POD_NAME)" in shard["args"] and "--data-dir=/data" in shard["args"]
    assert {"mountPath": "/data", "name": "data"} in shard["volumeMounts"]
    assert shard["readinessProbe"]["grpc"]["service"] == "quiver.v1.Shard"
    assert ("PodDisruptionBudget", "quiver-shard") in docs


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_command_lines_use_only_options_the_console_scripts_have(path: Path):
    for document in documents(path):
        for container in containers(document):
            command = container.get("command", [])
            if command and command[0] in COMMANDS:
                check_command_line(command + container.get("args", []))
                assert container["resources"]["requests"], container["name"]


def test_compose_command_lines_use_only_options_the_console_scripts_have():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    quiver_services = {name: s for name, s in compose["services"].items() if s.get("command", [""])[0] in COMMANDS}
    assert {"shard-0", "shard-1", "shard-2", "router"} <= set(quiver_services)
    for service in quiver_services.values():
        check_command_line(service["command"])
    assert {"etcd", "prometheus"} <= set(compose["services"])


def test_a_wrong_option_would_be_caught():
    with pytest.raises(click.UsageError):
        check_command_line(["quiver-shard", "--data-dir", "/data", "--no-such-flag"])


def test_the_console_scripts_named_exist_in_the_package():
    scripts = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(COMMANDS) <= set(scripts)


def test_the_compose_prometheus_scrapes_every_quiver_service_on_its_metrics_port():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for name, service in compose["services"].items():
        command = service.get("command", [""])
        if command[0] in COMMANDS:
            assert f"{name}:{command[command.index('--metrics-port') + 1]}" in targets


def exported_metric_names() -> set[str]:
    names = set()
    probe = object()
    partition_metrics.watch(probe, "probe")  # type: ignore[arg-type] - registers the partition collector
    partition_metrics.unwatch(probe)  # type: ignore[arg-type]
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def test_the_dashboard_uses_only_metrics_the_processes_export():
    dashboard = json.loads((DEPLOY / "grafana" / "quiver-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b(quiver_[a-z_]+)", e)}
    assert used and used <= exported_metric_names(), sorted(used - exported_metric_names())


def test_the_dockerfile_is_multi_stage_runs_as_non_root_and_installs_the_base_package():
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M)
    assert "pip install --no-cache-dir --no-index --find-links /wheels quiver " in text  # no extras
