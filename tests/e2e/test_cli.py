"""Every `quiver` verb end to end against real processes (a LocalCluster), run as a user runs it: the
installed console script in a subprocess, the router named by QUIVER_ROUTER; each verb's errors too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.local_cluster import LocalCluster, free_port

QUIVER = str(Path(sys.executable).parent / "quiver")
DIM = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(Path(tmp_path_factory.mktemp("cli")), shards=2) as running:
        yield running


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-files")
    vectors = np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    np.save(root / "v.npy", vectors)
    table = pa.table({
        "doc": [f"d{i}" for i in range(30)],
        "vector": [row.tolist() for row in vectors],
        "lang": ["en" if i % 3 else "de" for i in range(30)],
        "year": [2000 + i for i in range(30)],
    })
    pq.write_table(table, root / "docs.parquet")
    return {"npy": root / "v.npy", "parquet": root / "docs.parquet"}


def quiver(cluster: LocalCluster | None, *args: str, stdin: str = "", ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QUIVER_ROUTER=cluster.router_address if cluster else f"127.0.0.1:{free_port('127.0.0.1')}")
    result = subprocess.run([QUIVER, *args], capture_output=True, text=True, input=stdin, env=env, timeout=120)
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    else:
        assert result.returncode != 0, (args, result.stdout)
        assert "Traceback" not in result.stderr, result.stderr
    return result


def test_version():
    assert quiver(None, "--version").stdout.startswith("quiver, version ")


def test_a_cli_without_a_cluster_says_how_to_start_one():
    result = quiver(None, "list", ok=False)
    assert "no cluster at 127.0.0.1:" in result.stderr and "quiver up" in result.stderr


def test_collection_verbs_create_list_describe_count_and_drop(cluster: LocalCluster, files: dict[str, Path]):
    quiver(cluster, "create-collection", "docs", "--dim", str(DIM), "--shards", "2", "--index", "flat", "--model", "m1")
    listed = quiver(cluster, "list").stdout
    assert "docs" in listed and "flat" in listed and "m1" in listed
    (row,) = [json.loads(line) for line in quiver(cluster, "list", "--json").stdout.splitlines()]
    assert row["spec"]["name"] == "docs" and row["spec"]["dim"] == DIM
    quiver(cluster, "load", "docs", str(files["parquet"]), "--ids-column", "doc")
    assert quiver(cluster, "count", "docs").stdout.strip() == "30"
    described = json.loads(quiver(cluster, "describe", "docs").stdout)
    assert described["points"] == 30 and described["shards_answering"] == "2/2"
    assert "does not exist" in quiver(cluster, "describe", "nope", ok=False).stderr
    assert "does not exist" in quiver(cluster, "count", "nope", ok=False).stderr


def test_load_refuses_existing_ids_unless_overwrite_and_makes_unique_ids_for_a_file_without_any(cluster: LocalCluster, files: dict[str, Path]):
    refused = quiver(cluster, "load", "docs", str(files["parquet"]), "--ids-column", "doc", ok=False)
    assert "30 of these ids already exist in docs" in refused.stderr and "--overwrite" in refused.stderr
    quiver(cluster, "load", "docs", str(files["parquet"]), "--ids-column", "doc", "--overwrite")
    assert quiver(cluster, "count", "docs").stdout.strip() == "30"
    quiver(cluster, "load", "docs", str(files["npy"]))
    quiver(cluster, "load", "docs", str(files["npy"]))  # a second file (or the same twice) adds, never overwrites
    assert quiver(cluster, "count", "docs").stdout.strip() == "90"
    assert "no column 'nope'" in quiver(cluster, "load", "docs", str(files["parquet"]), "--ids-column", "nope", ok=False).stderr


def test_get_prints_points_and_names_the_missing(cluster: LocalCluster):
    result = quiver(cluster, "get", "docs", "d1", "d3", "missing", "--vectors")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["d1", "d3"]
    assert rows[0]["metadata"] == {"lang": "en", "year": 2001} and len(rows[0]["vector"]) == DIM
    assert "not found: missing" in result.stderr


def test_search_with_a_filter_expression_and_a_bad_one_pointing_at_its_column(cluster: LocalCluster, files: dict[str, Path]):
    result = quiver(cluster, "search", "docs", "--vectors", str(files["npy"]), "--row", "4", "-k", "30",
                    "--filter", 'lang == "de" and year >= 2010')
    hits = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert hits and set(hits) <= {f"d{i}" for i in range(10, 30) if i % 3 == 0}
    assert set(hits) == {f"d{i}" for i in range(10, 30) if i % 3 == 0}
    bad = quiver(cluster, "search", "docs", "--vectors", str(files["npy"]), "--filter", "lang = 'de'", ok=False)
    assert "bad filter at column 6" in bad.stderr


def test_delete_by_ids_and_by_filter_after_confirmation(cluster: LocalCluster):
    assert "deleted 2 points" in quiver(cluster, "delete", "docs", "d0", "d1").stdout
    declined = quiver(cluster, "delete", "docs", "--filter", "year >= 2020", stdin="n\n", ok=False)
    assert "Aborted" in declined.stderr
    assert quiver(cluster, "count", "docs").stdout.strip() == "88"
    assert "deleted 10 points" in quiver(cluster, "delete", "docs", "--filter", "year >= 2020", "--yes").stdout
    assert quiver(cluster, "count", "docs").stdout.strip() == "78"
    assert "name the ids to delete" in quiver(cluster, "delete", "docs", ok=False).stderr


def test_drop_asks_first_and_a_no_keeps_the_collection(cluster: LocalCluster):
    quiver(cluster, "drop", "docs", stdin="n\n", ok=False)
    assert "docs" in quiver(cluster, "list").stdout
    quiver(cluster, "drop", "docs", stdin="y\n")
    assert "no collections" in quiver(cluster, "list").stdout
    assert "does not exist" in quiver(cluster, "drop", "docs", "--yes", ok=False).stderr


def test_status_lists_servers_collections_and_replicas(cluster: LocalCluster):
    quiver(cluster, "create-collection", "st", "--dim", str(DIM), "--shards", "2", "--index", "flat")
    out = quiver(cluster, "status").stdout
    assert "2 shard servers" in out and "collection st: dim=8 shards=2" in out
    assert out.count("st v1 shard") == 2 and "serving" in out


def test_create_collection_refuses_a_bad_parameter_and_a_taken_name(cluster: LocalCluster):
    assert "expected NAME=INTEGER" in quiver(cluster, "create-collection", "x", "--dim", "8", "--param", "m=big", ok=False).stderr
    assert quiver(cluster, "create-collection", "st", "--dim", "16", ok=False).stderr.startswith("Error: AlreadyExists")


def test_search_word_queries_a_glove_collection_with_a_words_vector(cluster: LocalCluster):
    from loadtest.datasets import glove_words, load_glove_matrix
    from quiver.client import Client

    words, matrix = glove_words()[:2000], load_glove_matrix()[:2000]
    with Client(cluster.router_address) as client:
        client.create_collection("glove", 50, index="flat", shards=2)
        client.upsert("glove", words, matrix)
    out = quiver(cluster, "search-word", "glove", "king", "-k", "3").stdout.splitlines()
    assert out[0].startswith("king:") and out[1].split()[1] == "king"  # a word is its own nearest neighbour
    assert "not in the GloVe vocabulary: qqqxqq" in quiver(cluster, "search-word", "glove", "qqqxqq", ok=False).stderr


def test_reindex_builds_the_next_version_shows_progress_and_cutover_switches_to_it(cluster: LocalCluster, files: dict[str, Path]):
    quiver(cluster, "create-collection", "re", "--dim", str(DIM), "--shards", "1", "--index", "flat")
    quiver(cluster, "load", "re", str(files["parquet"]), "--ids-column", "doc")
    assert "--param needs --index" in quiver(cluster, "reindex", "re", "--param", "m=8", ok=False).stderr
    out = quiver(cluster, "reindex", "re", "--index", "hnsw", "--param", "m=8", "--shards", "2").stdout
    assert "reindex re v1 -> v2" in out and "v2 is ready and follows v1" in out
    assert f"reindex re v1 -> v2 (run by router {cluster.router_address}): ready" in quiver(cluster, "status").stdout
    verified = json.loads(quiver(cluster, "verify", "re", "--queries", str(files["npy"]), "-k", "5").stdout)
    assert (verified["version"], verified["active"], verified["queries"], verified["k"]) == (2, 1, 30, 5)
    assert 0 < verified["recall"] <= 1 and 0 < verified["overlap"] <= 1
    # The figures are kept with the version: `quiver versions` lists them (through any router).
    assert f"verified on 30 queries: recall@5 {verified['recall']:.3f} overlap@5 {verified['overlap']:.3f} with v1" in quiver(cluster, "versions", "re").stdout
    refused = quiver(cluster, "cutover", "re", "--queries", str(files["npy"]), "--min-recall", "1.01", ok=False)
    assert "cutover of re to v2 refused: recall@10" in refused.stderr and "--force overrides" in refused.stderr
    assert "need --queries" in quiver(cluster, "cutover", "re", "--min-overlap", "0.5", ok=False).stderr
    assert "active v1" in quiver(cluster, "versions", "re").stdout  # the refusals switched nothing
    assert "v2 is active" in quiver(cluster, "cutover", "re", "--queries", str(files["npy"]), "--min-recall", "0.5", "--min-overlap", "0.5").stdout
    listed = quiver(cluster, "versions", "re").stdout
    assert "v2 active" in listed and "shards=2" in listed and "30 points built from v1" in listed
    assert quiver(cluster, "count", "re").stdout.strip() == "30"


def test_a_reindex_command_killed_mid_build_then_run_again_attaches_to_the_same_build_and_it_cuts_over(cluster: LocalCluster):
    from quiver.client import Client
    from tests.data_fixtures import glove_subset

    vectors = glove_subset().base
    with Client(cluster.router_address) as client:
        client.create_collection("killed", vectors.shape[1], index="flat", shards=2)
        client.upsert("killed", [f"p{i}" for i in range(len(vectors))], vectors)
    env = dict(os.environ, QUIVER_ROUTER=cluster.router_address)
    command = subprocess.Popen([QUIVER, "reindex", "killed", "--index", "hnsw", "--param", "m=8"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert command.stdout is not None
        assert "reindex killed v1 -> v2" in command.stdout.readline()  # the build is under way
    finally:
        command.kill()  # SIGKILL: the CLI gets no chance to tidy anything
        command.wait(10)
    again = quiver(cluster, "reindex", "killed", "--index", "hnsw", "--param", "m=8").stdout
    assert "v2 is ready" in again and "v3" not in again, again  # the same build, not a fresh one
    assert "v2 is active" in quiver(cluster, "cutover", "killed").stdout
    assert quiver(cluster, "count", "killed").stdout.strip() == str(len(vectors))
