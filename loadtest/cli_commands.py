"""The CLI verbs that come with the load tester: `quiver demo` (the main job, on real GloVe vectors),
`quiver search-word` (a GloVe word as the query) and `quiver sizing` (the capacity planner).

They live here, not in quiver/cli.py, because they need the load tester's data sets and planner, which the
base install leaves out: `quiver` finds them through the `quiver.cli` entry points (pyproject.toml), so the
shared package never imports loadtest/. Their heavier imports stay inside each command, so `quiver --help`
works on a base install and a command whose extra is missing says which to install.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import click
import numpy as np

from quiver.cli import _load_with_progress, one_line_errors, parse_filter, print_results, router_option


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("quiver-demo-data"), show_default=True)
@click.option("--shards", "shard_count", default=3, show_default=True)
@click.option("--n-base", type=int, default=None, help="Load only this many GloVe vectors (default: all 390,000).")
@click.option("--ef-search", default=128, show_default=True)
@click.option("--keep-running", is_flag=True, help="Leave the cluster up after the demo (Ctrl-C stops it).")
@one_line_errors
def demo(data_dir: Path, shard_count: int, n_base: int | None, ef_search: int, keep_running: bool) -> None:
    """The main job: a local cluster loaded with real GloVe vectors, answering queries, with recall."""
    import shutil

    from loadtest.datasets import glove_split_rows, glove_words, load_glove50, load_glove_matrix, recall_at_k
    from quiver.client import Client
    from quiver.filters import Eq
    from quiver.local_cluster import LocalCluster

    click.echo("preparing GloVe-50 (cached after the first run) ...")
    data = load_glove50(n_base=n_base, n_queries=10_000, gt_k=100)
    words = glove_words()
    base_rows, _ = glove_split_rows(n_base, 10_000)
    matrix = load_glove_matrix()
    row_of = {w: i for i, w in enumerate(words)}
    ids = [words[r] for r in base_rows]
    # A little metadata to filter on: word length and whether the word is purely alphabetic.
    metadata = [{"length": len(w), "alpha": w.isalpha()} for w in ids]
    shutil.rmtree(data_dir, ignore_errors=True)
    with LocalCluster(data_dir, shards=shard_count) as cluster:
        address = cluster.router_address
        click.echo(f"cluster up: etcd {cluster.etcd.endpoint}, {shard_count} shard servers, router {address}")
        with Client(address, timeout=120) as client:
            client.create_collection("glove", data.base.shape[1], metric="cosine", index="hnsw",
                                     index_params={"m": 16, "ef_construction": 200, "ef_search": ef_search},
                                     shards=shard_count, model="glove-6b-50d")
            started = time.perf_counter()
            _load_with_progress(client, "glove", ids, data.base, metadata)
            elapsed = time.perf_counter() - started
            click.echo(f"loaded {len(ids):,} vectors in {elapsed:.1f}s ({len(ids) / elapsed:,.0f} vectors/s)")

            for word in ("king", "computer", "paris"):
                if word not in row_of:
                    continue
                hits = client.search("glove", matrix[row_of[word]], 6)[0].hits
                click.echo(f"nearest to {word!r}: " + ", ".join(f"{h.id} ({h.score:.3f})" for h in hits if h.id != word))
            query = matrix[row_of["river"]]
            hits = client.search("glove", query, 5, filter=Eq("length", 5), include_metadata=True)[0].hits
            click.echo("nearest 5-letter words to 'river': " + ", ".join(h.id for h in hits))

            n_eval = 1000
            id_row = {w: i for i, w in enumerate(ids)}
            started = time.perf_counter()
            results = []
            for start in range(0, n_eval, 100):
                results += client.search("glove", data.queries[start : start + 100], 10)
            elapsed = time.perf_counter() - started
            found = np.array([[id_row[i] for i in r.ids] + [-1] * (10 - len(r.ids)) for r in results])
            recall = recall_at_k(found, data.ground_truth[:n_eval], 10)
            click.echo(f"recall@10 over {n_eval} held-out queries vs exact brute force: {recall:.4f} "
                       f"(batches of 100: {n_eval / elapsed:,.0f} queries/s through the router)")
        if keep_running:
            click.echo(f"cluster still up at {address}; Ctrl-C stops it")
            try:
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            except KeyboardInterrupt:
                pass
    click.echo("cluster stopped")






@click.command()
@click.option("--vectors", type=float, required=True, help="Number of vectors (e.g. 1e9).")
@click.option("--dim", type=int, required=True)
@click.option("--index", type=click.Choice(["flat", "hnsw", "ivf_pq"]), default="hnsw", show_default=True)
@click.option("--hnsw-m", default=16, show_default=True)
@click.option("--nlist", default=65536, show_default=True)
@click.option("--pq-m", default=64, show_default=True)
@click.option("--pq-nbits", default=8, show_default=True)
@click.option("--refine", is_flag=True)
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True, help="IVF-PQ under l2 also holds faiss's precomputed table.")
@click.option("--replication-factor", default=1, show_default=True)
@click.option("--metadata-bytes", default=0, show_default=True, help="Each point's metadata values' own bytes (strings' UTF-8, 8 per number).")
@click.option("--id-bytes", default=40, show_default=True, help="Each id's own UTF-8 bytes (a UUID's text is 36; a decimal counter's about 10).")
@click.option("--target-qps", default=0.0, show_default=True)
@click.option("--node-ram-gib", default=256.0, show_default=True)
@click.option("--node-cores", default=32, show_default=True)
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None)
@one_line_errors
def sizing(vectors: float, dim: int, index: str, hnsw_m: int, nlist: int, pq_m: int, pq_nbits: int, refine: bool, metric: str, replication_factor: int, metadata_bytes: int, id_bytes: int, target_qps: float, node_ram_gib: float, node_cores: int, calibration: Path | None) -> None:
    """Capacity plan: memory per vector and shard, shards, nodes, disk, build time, QPS per node."""
    from loadtest.sizing import DEFAULT_CALIBRATION, SizingInput, format_plan, load_coefficients, plan

    coefficients = load_coefficients(calibration or DEFAULT_CALIBRATION)
    inp = SizingInput(
        vectors=int(vectors), dim=dim, index_kind=index, hnsw_m=hnsw_m, ivf_nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits,
        refine=refine, metric=metric, replication_factor=replication_factor, metadata_bytes_per_point=metadata_bytes, id_bytes_per_point=id_bytes,
        target_qps=target_qps, node_ram_bytes=int(node_ram_gib * 2**30), node_cores=node_cores,
    )
    click.echo(format_plan(plan(inp, coefficients)))


@click.command("search-word")
@click.argument("name")
@click.argument("words", nargs=-1, required=True)
@click.option("-k", "--k", "k", default=10, show_default=True)
@click.option("--filter", "filter_json", default=None, help='Filter, e.g. \'length == 5\' (or proto3 JSON of quiver.v1.Filter).')
@click.option("--ef-search", default=0)
@router_option
@one_line_errors
def search_word(name: str, words: tuple[str, ...], k: int, filter_json: str | None, ef_search: int, router: str) -> None:
    """Search a collection of GloVe-50 vectors (the demo's) with the vectors of these words."""
    from loadtest.datasets import glove_words, load_glove_matrix

    index = {w: i for i, w in enumerate(glove_words())}
    missing = [w for w in words if w not in index]
    if missing:
        raise click.BadParameter(f"not in the GloVe vocabulary: {', '.join(missing)}")
    queries = load_glove_matrix()[[index[w] for w in words]]
    print_results(router, name, queries, list(words), k, parse_filter(filter_json), ef_search, 0, "")
