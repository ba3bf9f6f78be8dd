"""`quiver`: the command line for people. Errors print as one line, not a traceback.

    quiver up                      start etcd + shard servers + router on loopback (Ctrl-C stops all)
    quiver demo                    up + load GloVe + searches with recall vs exact ground truth
    quiver status                  servers, collections, replicas and point counts
    quiver create-collection NAME  --dim 50 --shards 3 [--index hnsw --param m=16 ...]
    quiver load NAME FILE          bulk-load .npy/.fvecs/.parquet vectors (progress bar, vectors/s)
    quiver search NAME             query with rows of a vector file, or a word of the GloVe demo
    quiver sizing                  capacity plan for N vectors (see loadtest/README.md)
"""
from __future__ import annotations

import functools
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import click
import grpc
import numpy as np
from google.protobuf import json_format

from quiver.errors import QuiverError
from quiver.filters import Filter
from quiver.v1 import types_pb2
from quiver.wire.filters import filter_from_proto

DEFAULT_ROUTER = "127.0.0.1:7000"


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except QuiverError as error:
            raise click.ClickException(f"{type(error).__name__}: {error}") from None
        except grpc.RpcError as error:
            raise click.ClickException(f"{error.code().name}: {error.details()}") from None  # type: ignore[attr-defined]
        except (OSError, ValueError, json_format.ParseError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def parse_filter(text: str | None) -> Filter | None:
    """A filter in the proto3 JSON form of quiver.v1.Filter, e.g. '{"eq": {"field": "lang", "value": {"stringValue": "en"}}}'."""
    if not text:
        return None
    return filter_from_proto(json_format.Parse(text, types_pb2.Filter()))


def parse_params(pairs: tuple[str, ...]) -> dict[str, int]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise click.BadParameter(f"{pair!r}: expected NAME=INTEGER, e.g. m=16")
        params[key] = int(value)
    return params


@click.group()
def main() -> None:
    """Quiver: a sharded vector search cluster."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("quiver-data"), show_default=True)
@click.option("--shards", "shard_servers", default=3, show_default=True, help="Number of shard server processes.")
@click.option("--port", default=7000, show_default=True, help="Router port.")
@one_line_errors
def up(data_dir: Path, shard_servers: int, port: int) -> None:
    """Start a local cluster on loopback and keep it running until Ctrl-C or SIGTERM.

    Started again on the same --data-dir, it serves every collection it held: etcd keeps the cluster
    state there and each shard server its id and partitions."""
    from quiver.local_cluster import LocalCluster

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through LocalCluster's exit, which stops every child by pid

    signal.signal(signal.SIGTERM, stop_on_signal)
    with LocalCluster(data_dir, shards=shard_servers, router_port=port) as cluster:
        click.echo(f"etcd      {cluster.etcd.endpoint}")
        for server in cluster.shard_servers:
            click.echo(f"shard     {server.address}")
        click.echo(f"router    {cluster.router_address}")
        click.echo(f"Quiver is up: router at {cluster.router_address}; logs in {data_dir / 'logs'}. Ctrl-C stops everything.")
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            click.echo("stopping...")


@main.command()
@click.option("--router", default=DEFAULT_ROUTER, show_default=True)
@one_line_errors
def status(router: str) -> None:
    """Servers, collections and replicas with point counts."""
    from quiver.client import Client

    with Client(router) as client:
        reply = client.status()
    click.echo(f"{len(reply.servers)} shard servers")
    for server in reply.servers:
        click.echo(f"  {server.server_id:<20} {server.address}")
    for info in reply.collections:
        spec = info.spec
        click.echo(f"collection {spec.name}: dim={spec.dim} shards={spec.shards} rf={spec.replication_factor} model={spec.model or '-'} version={info.active_version}")
    for replica in reply.replicas:
        training = "" if replica.trained or replica.state == "unreachable" else " (training: searches are exact)"
        writes = f" WRITES REFUSED ({replica.write_state}: {replica.write_fault})" if replica.write_state not in ("", "ok") else ""
        click.echo(f"  {replica.collection} v{replica.version} shard {replica.shard}: {replica.server_id} at {replica.address or '-'} {replica.state} {replica.point_count} points{training}{writes}")
    for skipped in reply.skipped_records:
        click.echo(f"skipped unreadable record {skipped.key}: {skipped.reason}")


@main.command("create-collection")
@click.argument("name")
@click.option("--dim", type=int, required=True)
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True)
@click.option("--index", type=click.Choice(["hnsw", "ivf_pq", "flat"]), default="hnsw", show_default=True)
@click.option("--param", "params", multiple=True, help="Index parameter NAME=VALUE (hnsw: m, ef_construction, ef_search; ivf_pq: nlist, m, nbits, nprobe, train_size, refine).")
@click.option("--shards", default=1, show_default=True)
@click.option("--replication-factor", default=1, show_default=True)
@click.option("--model", default="", help="Embedding model tag; requests naming another model are refused.")
@click.option("--router", default=DEFAULT_ROUTER, show_default=True)
@one_line_errors
def create_collection(name: str, dim: int, metric: str, index: str, params: tuple[str, ...], shards: int, replication_factor: int, model: str, router: str) -> None:
    """Create a collection and place its shards on the live shard servers."""
    from quiver.client import Client

    with Client(router) as client:
        client.create_collection(name, dim, metric=metric, index=index, index_params=parse_params(params), shards=shards, replication_factor=replication_factor, model=model)
    click.echo(f"created collection {name} ({shards} shards, {index}, {metric}, dim {dim})")


def read_ids_and_metadata(path: Path, n: int, ids_column: str | None) -> tuple[list[str], list[dict[str, Any]] | None]:
    if path.suffix != ".parquet":
        return [str(i) for i in range(n)], None
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = [c for c in table.column_names if c not in ("vector", ids_column)]
    ids = [str(v) for v in table.column(ids_column).to_pylist()] if ids_column else [str(i) for i in range(n)]
    metadata = table.select(columns).to_pylist() if columns else None
    if metadata:
        metadata = [{k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items() if v is not None} for row in metadata]
    return ids, metadata


def read_vectors(path: Path) -> np.ndarray:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=["vector"]).column("vector").to_pylist()
        return np.asarray(column, dtype=np.float32)
    from loadtest.datasets import load_vectors_file

    return load_vectors_file(path)


@main.command()
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--ids-column", default=None, help="Parquet column holding point ids (default: row numbers).")
@click.option("--batch-size", default=2000, show_default=True)
@click.option("--router", default=DEFAULT_ROUTER, show_default=True)
@one_line_errors
def load(name: str, path: Path, ids_column: str | None, batch_size: int, router: str) -> None:
    """Bulk-load vectors (.npy, .fvecs, or .parquet with a 'vector' column and metadata columns)."""
    from quiver.client import Client

    vectors = read_vectors(path)
    ids, metadata = read_ids_and_metadata(path, len(vectors), ids_column)
    started = time.perf_counter()
    with Client(router, timeout=120) as client:
        _load_with_progress(client, name, ids, vectors, metadata, batch=batch_size)
    elapsed = time.perf_counter() - started
    click.echo(f"loaded {len(ids)} vectors into {name} in {elapsed:.1f}s ({len(ids) / elapsed:,.0f} vectors/s)")


@main.command()
@click.argument("name")
@click.option("--vectors", "vector_file", type=click.Path(exists=True, path_type=Path), help="File of query vectors (.npy/.fvecs).")
@click.option("--row", "rows", multiple=True, type=int, help="Row(s) of --vectors to use as queries (default 0).")
@click.option("--word", "words", multiple=True, help="A GloVe word to use as the query (the demo data).")
@click.option("-k", "--k", "k", default=10, show_default=True)
@click.option("--filter", "filter_json", default=None, help="Filter as proto3 JSON of quiver.v1.Filter.")
@click.option("--ef-search", default=0)
@click.option("--nprobe", default=0)
@click.option("--partition-key", default="")
@click.option("--router", default=DEFAULT_ROUTER, show_default=True)
@one_line_errors
def search(name: str, vector_file: Path | None, rows: tuple[int, ...], words: tuple[str, ...], k: int, filter_json: str | None, ef_search: int, nprobe: int, partition_key: str, router: str) -> None:
    """Search a collection and print ids and scores."""
    from quiver.client import Client

    if words:
        from loadtest.datasets import glove_words, load_glove_matrix

        index = {w: i for i, w in enumerate(glove_words())}
        missing = [w for w in words if w not in index]
        if missing:
            raise click.BadParameter(f"not in the GloVe vocabulary: {', '.join(missing)}")
        queries = load_glove_matrix()[[index[w] for w in words]]
        labels = list(words)
    elif vector_file is not None:
        from loadtest.datasets import load_vectors_file

        chosen = list(rows) or [0]
        queries = load_vectors_file(vector_file)[chosen]
        labels = [f"row {r}" for r in chosen]
    else:
        raise click.UsageError("give --word or --vectors")
    with Client(router) as client:
        results = client.search(name, queries, k, filter=parse_filter(filter_json), ef_search=ef_search, nprobe=nprobe, include_metadata=True, partition_key=partition_key)
    for label, result in zip(labels, results):
        click.echo(f"{label}: ({result.strategy}, {result.shards_answered}/{result.shards_asked} shards)")
        for hit in result.hits:
            extra = f"  {json.dumps(hit.metadata, default=list)}" if hit.metadata else ""
            click.echo(f"  {hit.score:8.4f}  {hit.id}{extra}")


@main.command()
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




def _load_with_progress(client: Any, name: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]] | None, batch: int = 2000, in_flight: int = 4) -> None:
    """Upserts in batches with a few in flight, so shards index one batch while the next travels."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def send(start: int) -> int:
        chunk = ids[start : start + batch]
        client.upsert(name, chunk, vectors[start : start + batch], metadata[start : start + batch] if metadata else None, batch_size=batch)
        return len(chunk)

    with tqdm(total=len(ids), unit="vec", unit_scale=True, desc=f"loading {name}") as bar, ThreadPoolExecutor(in_flight) as pool:
        for sent in pool.map(send, range(0, len(ids), batch)):
            bar.update(sent)


@main.command()
@click.option("--vectors", type=float, required=True, help="Number of vectors (e.g. 1e9).")
@click.option("--dim", type=int, required=True)
@click.option("--index", type=click.Choice(["flat", "hnsw", "ivf_pq"]), default="hnsw", show_default=True)
@click.option("--hnsw-m", default=16, show_default=True)
@click.option("--nlist", default=65536, show_default=True)
@click.option("--pq-m", default=64, show_default=True)
@click.option("--pq-nbits", default=8, show_default=True)
@click.option("--refine", is_flag=True)
@click.option("--replication-factor", default=1, show_default=True)
@click.option("--metadata-bytes", default=0, show_default=True)
@click.option("--target-qps", default=0.0, show_default=True)
@click.option("--node-ram-gib", default=256.0, show_default=True)
@click.option("--node-cores", default=32, show_default=True)
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None)
@one_line_errors
def sizing(vectors: float, dim: int, index: str, hnsw_m: int, nlist: int, pq_m: int, pq_nbits: int, refine: bool, replication_factor: int, metadata_bytes: int, target_qps: float, node_ram_gib: float, node_cores: int, calibration: Path | None) -> None:
    """Capacity plan: memory per vector and shard, shards, nodes, disk, build time, QPS per node."""
    from loadtest.sizing import DEFAULT_CALIBRATION, SizingInput, format_plan, load_coefficients, plan

    coefficients = load_coefficients(calibration or DEFAULT_CALIBRATION)
    inp = SizingInput(
        vectors=int(vectors), dim=dim, index_kind=index, hnsw_m=hnsw_m, ivf_nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits,
        refine=refine, replication_factor=replication_factor, metadata_bytes_per_point=metadata_bytes,
        target_qps=target_qps, node_ram_bytes=int(node_ram_gib * 2**30), node_cores=node_cores,
    )
    click.echo(format_plan(plan(inp, coefficients)))


if __name__ == "__main__":
    main()
