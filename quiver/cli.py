"""`quiver`: the command line for people. Errors print as one line, not a traceback.

    quiver up                      start etcd + shard servers + router on loopback (Ctrl-C stops all)
    quiver status                  servers, collections, replicas and point counts
    quiver create-collection NAME  --dim 50 --shards 3 [--index hnsw --param m=16 ...]
    quiver load NAME FILE          bulk-load .npy/.fvecs/.parquet vectors (progress bar, vectors/s)
    quiver search NAME             query with rows of a vector file

With the load tester's extra installed (entry points `quiver.cli`, from loadtest/cli_commands.py):

    quiver demo                    up + load GloVe + searches with recall vs exact ground truth
    quiver search-word NAME WORD   query with a word of the GloVe demo
    quiver sizing                  capacity plan for N vectors (see loadtest/README.md)
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import click
import grpc
import numpy as np
from google.protobuf import json_format

from quiver.errors import QuiverError, Unavailable
from quiver.vector_files import load_vectors_file, read_ids_and_metadata, read_vectors
from quiver.filter_expressions import parse_filter_expression
from quiver.filters import Filter
from quiver.v1 import types_pb2
from quiver.wire.filters import filter_from_proto

DEFAULT_ROUTER = "127.0.0.1:7000"
router_option = click.option(
    "--router", default=DEFAULT_ROUTER, show_default=True, envvar="QUIVER_ROUTER", help="Router address (env QUIVER_ROUTER)."
)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Unavailable as error:
            router = click.get_current_context().params.get("router")
            if router and "connect" in str(error).lower():  # "failed to connect", "connection refused"
                raise click.ClickException(
                    f"no cluster at {router}: start one with `quiver up`, or point --router (or QUIVER_ROUTER) at a "
                    f"running router ({error})"
                ) from None
            raise click.ClickException(f"Unavailable: {error}") from None
        except QuiverError as error:
            raise click.ClickException(f"{type(error).__name__}: {error}") from None
        except grpc.RpcError as error:
            raise click.ClickException(f"{error.code().name}: {error.details()}") from None  # type: ignore[attr-defined]
        except ModuleNotFoundError as error:
            raise click.ClickException(
                f"this command needs {error.name!r}, which the base install leaves out: "
                "pip install 'quiver[loadtest]' (or 'quiver[demo]' for the demo)"
            ) from None
        except (OSError, ValueError, json_format.ParseError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def parse_filter(text: str | None) -> Filter | None:
    """A filter expression (`lang == "en" and year >= 2020`, see quiver/filter_expressions.py), or the proto3
    JSON form of quiver.v1.Filter when it starts with '{'."""
    if not text or not text.strip():
        return None
    if text.lstrip().startswith("{"):
        return filter_from_proto(json_format.Parse(text, types_pb2.Filter()))
    return parse_filter_expression(text)


def parse_params(pairs: tuple[str, ...]) -> dict[str, int]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise click.BadParameter(f"{pair!r}: expected NAME=INTEGER, e.g. m=16")
        params[key] = int(value)
    return params


EXTRA_COMMANDS_GROUP = "quiver.cli"


class _WithExtraCommands(click.Group):
    """The core verbs, plus those an installed package adds through the `quiver.cli` entry points."""

    @staticmethod
    def _extras() -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=EXTRA_COMMANDS_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._extras()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        entry = self._extras().get(name)
        return entry.load() if entry is not None else None


@click.group(cls=_WithExtraCommands)
@click.version_option(package_name="quiver", prog_name="quiver")
def main() -> None:
    """Quiver: a sharded vector search cluster."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("quiver-data"), show_default=True)
@click.option("--shards", "shard_servers", default=3, show_default=True, help="Number of shard server processes.")
@click.option("--port", default=7000, show_default=True, help="Router port.")
@click.option("--node", is_flag=True, help="One process that is the router and the shard server (node mode: no network hop between them); --shards is ignored.")
@one_line_errors
def up(data_dir: Path, shard_servers: int, port: int, node: bool) -> None:
    """Start a local cluster on loopback and keep it running until Ctrl-C or SIGTERM.

    Started again on the same --data-dir, it serves every collection it held: etcd keeps the cluster
    state there and each shard server its id and partitions."""
    from quiver.local_cluster import LocalCluster

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through LocalCluster's exit, which stops every child by pid

    signal.signal(signal.SIGTERM, stop_on_signal)
    layout = {"shards": 0, "routers": 0, "nodes": 1} if node else {"shards": shard_servers}
    with LocalCluster(data_dir, router_port=port, **layout) as cluster:
        click.echo(f"etcd      {cluster.etcd.endpoint}")
        for server in cluster.shard_servers:
            click.echo(f"{'node' if server in cluster.nodes else 'shard':<9} {server.address}")
        click.echo(f"router    {cluster.router_address}")
        click.echo(f"Quiver is up: router at {cluster.router_address}; logs in {data_dir / 'logs'}. Ctrl-C stops everything.")
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            click.echo("stopping...")


@main.command()
@router_option
@one_line_errors
def status(router: str) -> None:
    """Servers, collections, and every replica: role (primary, in_sync, catching_up), term, LSN, lag, points."""
    from quiver.client import Client

    with Client(router) as client:
        reply = client.status()
    click.echo(f"{len(reply.servers)} shard servers")
    for server in reply.servers:
        click.echo(f"  {server.server_id:<20} {server.address}{'  DRAINING' if server.draining else ''}")
    for info in reply.collections:
        spec = info.spec
        click.echo(f"collection {spec.name}: dim={spec.dim} shards={spec.shards} rf={spec.replication_factor} min_in_sync={spec.min_in_sync} model={spec.model or '-'} version={info.active_version}")
    for replica in reply.replicas:
        training = "" if replica.trained or replica.state == "unreachable" else " (training: searches are exact)"
        writes = f" WRITES REFUSED ({replica.write_state}: {replica.write_fault})" if replica.write_state not in ("", "ok") else ""
        role = f"{replica.role} term {replica.term} lsn {replica.last_lsn} lag {replica.lag}"
        click.echo(f"  {replica.collection} v{replica.version} shard {replica.shard}: {replica.server_id} at {replica.address or '-'} {replica.state} {role} {replica.point_count} points{training}{writes}")
    for key, reason in reply.skipped_records.items():
        click.echo(f"skipped unreadable record {key}: {reason}")
    for build in reply.reindexes:
        click.echo(describe_build(build))
    for coverage in reply.model_coverage:
        click.echo(describe_coverage(coverage))


def describe_coverage(coverage) -> str:  # type: ignore[no-untyped-def]
    """How far the writes of a new model's vectors have got, in a line."""
    head = f"model {coverage.model!r} in {coverage.collection} v{coverage.version}: "
    if not coverage.counted_unix:
        return head + (f"count failed: {coverage.error}" if coverage.error else "counting v{0}'s ids".format(coverage.active_version))
    share = coverage.held / coverage.active_points if coverage.active_points else 1.0
    import time
    age = max(time.time() - coverage.counted_unix, 0.0)
    return head + (f"holds {coverage.held:,} of v{coverage.active_version}'s {coverage.active_points:,} ids ({share:.1%}), counted {age:.0f} s ago"
                   + (f" (recount failed: {coverage.error})" if coverage.error else ""))


def describe_build(build) -> str:  # type: ignore[no-untyped-def]
    """A reindex's progress in lines: the whole, then each source shard."""
    exported = sum(s.exported for s in build.shards)
    total = sum(s.total for s in build.shards)
    eta = f", about {build.eta_s:.0f} s to go" if build.eta_s else ""
    failure = f" FAILED: {build.failure}" if build.failure else ""
    by = f" (run by router {build.reported_by})" if build.reported_by else ""
    lines = [f"reindex {build.collection} v{build.source_version} -> v{build.version}{by}: {build.state}{failure}; "
             f"{exported:,}/{total:,} points exported at {build.points_per_s:,.0f}/s{eta}; {build.written:,} writes into v{build.version}"]
    for shard in build.shards:
        lag = max(shard.source_lsn - shard.replayed_lsn, 0)
        phase = "following" if shard.export_done else "exporting"
        lines.append(f"  from shard {shard.source_shard}: {phase}, {shard.exported:,}/{shard.total:,} points, replayed to lsn {shard.replayed_lsn} ({lag} behind)")
    return "\n".join(lines)


@main.command()
@click.argument("server_id")
@click.option("--cancel", is_flag=True, help="Stop draining it (replicas already moved stay where they are).")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Wait until no replica is left on it.")
@click.option("--wait-timeout", default=600.0, show_default=True, help="Seconds --wait waits at most.")
@router_option
@one_line_errors
def drain(server_id: str, cancel: bool, wait: bool, wait_timeout: float, router: str) -> None:
    """Move every replica off SERVER_ID (before maintenance): the controller places a new replica elsewhere,
    waits until it is in sync, hands a primary over, then removes the old one. `quiver status` shows progress."""
    import time

    from quiver.client import Client

    with Client(router) as client:
        held = client.drain(server_id, cancel=cancel)
        if cancel:
            click.echo(f"stopped draining {server_id} ({held} replicas on it)")
            return
        click.echo(f"draining {server_id}: {held} replicas to move")
        deadline = time.monotonic() + wait_timeout
        while wait and held:
            time.sleep(1.0)
            held = sum(1 for r in client.status().replicas if r.server_id == server_id)
            click.echo(f"  {held} replicas left on {server_id}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"{held} replicas still on {server_id} after {wait_timeout:g} s; see `quiver status`")
        if wait:
            click.echo(f"{server_id} holds no replica: safe to stop")


@main.command()
@click.argument("collection")
@router_option
@one_line_errors
def versions(collection: str, router: str) -> None:
    """List COLLECTION's index versions: state, index, model, shards, point counts, the last verification."""
    from google.protobuf.json_format import MessageToDict

    from quiver.client import Client

    with Client(router) as client:
        reply = client.versions(collection)
    click.echo(f"{collection}: active v{reply.active}" + (f", previous v{reply.previous}" if reply.previous else ""))
    for v in reply.versions:
        index = MessageToDict(v.index) if v.HasField("index") else {}
        built = f" built from v{v.built_from}" if v.built_from else ""
        failure = f" FAILED: {v.failure}" if v.failure else ""
        click.echo(f"  v{v.version} {v.state:<9} {index} model={v.model or '-'} shards={v.shards} rf={v.replication_factor} "
                   f"{v.point_count} points{built}{failure}")
        if v.HasField("verification"):
            f = v.verification
            overlap = f" overlap@{f.k} {f.overlap:.3f} with v{f.active}" if f.has_overlap else ""
            click.echo(f"      verified on {f.queries} queries: recall@{f.k} {f.recall:.3f}{overlap}; p50/p99 {f.p50_ms:.1f}/{f.p99_ms:.1f} ms "
                       f"(v{f.active}: {f.active_p50_ms:.1f}/{f.active_p99_ms:.1f} ms)")


@main.command()
@click.argument("collection")
@click.option("--index", type=click.Choice(["hnsw", "ivf_pq", "flat"]), default=None, help="The new version's index (default: the active version's).")
@click.option("--param", "params", multiple=True, help="Index parameter NAME=VALUE for --index (as create-collection).")
@click.option("--shards", default=0, help="The new version's shard count (default: the active version's); points are routed by the new count.")
@click.option("--replication-factor", default=0, help="The new version's replication factor (default: the active version's).")
@click.option("--model", default="", help="A new embedding model: the new version is opened for that model's writes (the client writes them, naming the model), not built from the active version's points.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Print progress until the new version is ready for cutover.")
@click.option("--wait-timeout", default=3600.0, show_default=True, help="Seconds --wait waits at most.")
@router_option
@one_line_errors
def reindex(collection: str, index: str | None, params: tuple[str, ...], shards: int, replication_factor: int, model: str, wait: bool, wait_timeout: float, router: str) -> None:
    """Build the next version of COLLECTION beside the active one, which serves meanwhile: its points are
    exported shard by shard, then its log is followed, so writes made during the build reach the new version.
    Once ready, `quiver cutover COLLECTION` (through this router) seals the active version, replays its last
    writes and switches. Run again while it builds: shows the same build; after its router stopped: starts over."""
    import time

    from quiver.client import Client

    if params and index is None:
        raise click.UsageError("--param needs --index (the kind the parameters are for)")
    with Client(router) as client:
        build = client.reindex(collection, index=index, index_params=parse_params(params) if params else None, shards=shards,
                               replication_factor=replication_factor, model=model)
        if model and not build.shards:
            click.echo(f"v{build.version} is open for writes of model {model!r} beside v{build.source_version}: upsert with "
                       f"model={model!r} (or version={build.version}); `quiver versions {collection}` counts its points")
            return
        click.echo(describe_build(build))
        deadline = time.monotonic() + wait_timeout
        while wait and build.state == "building":
            time.sleep(2.0)
            [build] = [b for b in client.reindex_status(collection) if b.version == build.version] or [build]
            click.echo(describe_build(build))
            if time.monotonic() > deadline:
                raise click.ClickException(f"v{build.version} is not ready after {wait_timeout:g} s; `quiver status` shows its progress")
        if build.state == "failed":
            raise click.ClickException(f"the build of v{build.version} failed: {build.failure}")
        if wait:
            click.echo(f"v{build.version} is ready and follows v{build.source_version}: `quiver cutover {collection}` switches to it")


@main.command()
@click.argument("collection")
@click.option("--version", "version", default=0, help="The version to verify (default: the newest ready one).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Query vectors (.npy, .fvecs, .parquet) to replay.")
@click.option("--limit", default=200, show_default=True, help="Queries replayed at most.")
@click.option("-k", "k", default=10, show_default=True)
@router_option
@one_line_errors
def verify(collection: str, version: int, queries: Path, limit: int, k: int, router: str) -> None:
    """Replay a query file against a version of COLLECTION and the active one: the version's recall@k
    against exact search, its overlap@k with the active version's answers, and both p50/p99 (JSON)."""
    import json

    from quiver.client import Client
    from quiver.verification import as_figures, load_queries, verify_version

    with Client(router) as client:
        result = verify_version(client, collection, version or _newest_ready(client, collection), load_queries(queries, limit), k)
        click.echo(json.dumps(result.as_dict()))
        _record(client, collection, as_figures(result))


def _record(client, collection: str, figures) -> None:  # type: ignore[no-untyped-def]
    """Keep the figures for `quiver versions`; a failure to keep them is a warning, never a lost result."""
    try:
        client.record_verification(collection, figures)
    except Exception as error:  # noqa: BLE001 - the figures are printed already
        click.echo(f"warning: the verification figures were not recorded for `quiver versions`: {error}", err=True)


def _newest_ready(client, collection: str) -> int:  # type: ignore[no-untyped-def]
    ready = [v.version for v in client.versions(collection).versions if v.state == "ready"]
    if not ready:
        raise click.ClickException(f"{collection} has no ready version (`quiver versions {collection}` lists them)")
    return max(ready)


@main.command()
@click.argument("collection")
@click.option("--to", "target", default=0, help="The ready version to switch to (default: the newest ready one).")
@click.option("--expected-active", default=0, help="Refuse unless this is still the active version (default: whichever is).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Verify first by replaying these queries (as `quiver verify`).")
@click.option("--min-recall", type=float, default=None, help="With --queries: refuse unless the new version's recall@k is at least this.")
@click.option("--min-overlap", type=float, default=None, help="With --queries: refuse unless its overlap@k with the active version is at least this.")
@click.option("--limit", default=200, show_default=True, help="Queries replayed at most.")
@click.option("--force", is_flag=True, help="Switch even when the new version's point count differs from the active one's, or it misses the thresholds.")
@router_option
@one_line_errors
def cutover(collection: str, target: int, expected_active: int, queries: Path | None, min_recall: float | None, min_overlap: float | None, limit: int, force: bool, router: str) -> None:
    """Switch COLLECTION to a ready version in one etcd transaction; the old one stays as previous."""
    import json

    from quiver.client import Client
    from quiver.verification import as_figures, check_thresholds, load_queries, verify_version

    if (min_recall is not None or min_overlap is not None) and queries is None:
        raise click.UsageError("--min-recall and --min-overlap need --queries to verify with")
    with Client(router) as client:
        if queries is not None:
            target = target or _newest_ready(client, collection)
            result = verify_version(client, collection, target, load_queries(queries, limit))
            click.echo(json.dumps(result.as_dict()))
            _record(client, collection, as_figures(result))
            short = check_thresholds(result, min_recall, min_overlap)
            if short and not force:
                raise click.ClickException(f"cutover of {collection} to v{target} refused: " + "; ".join(short) + " (--force overrides)")
        active, previous = client.cutover(collection, expected_active=expected_active, target=target, force=force)
    click.echo(f"{collection}: v{active} is active, v{previous} is previous (`quiver rollback {collection}` goes back)")


@main.command()
@click.argument("collection")
@click.option("--expected-active", default=0, help="Refuse unless this is still the active version (default: whichever is).")
@click.option("--force", is_flag=True, help="Even when no follow kept the previous version up to date since the cutover (writes made since are then missing from it).")
@router_option
@one_line_errors
def rollback(collection: str, expected_active: int, force: bool, router: str) -> None:
    """Switch COLLECTION back to its previous version in one etcd transaction (through the router that cut
    over, which kept it up to date since)."""
    from quiver.client import Client

    with Client(router) as client:
        active, _ = client.rollback(collection, expected_active=expected_active, force=force)
    click.echo(f"{collection}: v{active} is active again")


@main.command()
@click.argument("collection")
@click.argument("version", type=int)
@router_option
@one_line_errors
def retire(collection: str, version: int, router: str) -> None:
    """Retire VERSION of COLLECTION (not the active one): it takes no more writes and its partitions are freed."""
    from quiver.client import Client

    with Client(router) as client:
        client.retire(collection, version)
    click.echo(f"{collection}: v{version} retired")


@main.command("alias")
@click.argument("alias")
@click.argument("collection", required=False)
@click.option("--expected", default=None, help="Switch only if ALIAS points at this collection now (\"\": only if it does not exist yet).")
@click.option("--rm", "remove", is_flag=True, help="Delete ALIAS instead (only if it points at --expected or COLLECTION, when given).")
@router_option
@one_line_errors
def alias(alias: str, collection: str | None, expected: str | None, remove: bool, router: str) -> None:
    """Point ALIAS at COLLECTION (requests naming ALIAS go there; switched in one etcd transaction), or --rm it."""
    from quiver.client import Client

    with Client(router) as client:
        if remove:
            client.delete_alias(alias, expected=expected or collection or "")
            click.echo(f"alias {alias} deleted")
            return
        if not collection:
            raise click.UsageError("give the COLLECTION the alias is to point at (or --rm)")
        revision = client.set_alias(alias, collection, expected=expected)
    click.echo(f"alias {alias} -> {collection} (etcd revision {revision})")


@main.command("aliases")
@router_option
@one_line_errors
def aliases(router: str) -> None:
    """List the aliases and the collections they point at."""
    from quiver.client import Client

    with Client(router) as client:
        for name, collection in sorted(client.aliases().items()):
            click.echo(f"{name} -> {collection}")


@main.command("create-collection")
@click.argument("name")
@click.option("--dim", type=int, required=True)
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True)
@click.option("--index", type=click.Choice(["hnsw", "ivf_pq", "flat"]), default="hnsw", show_default=True)
@click.option("--param", "params", multiple=True, help="Index parameter NAME=VALUE (hnsw: m, ef_construction, ef_search; ivf_pq: nlist, m, nbits, nprobe, train_size, refine).")
@click.option("--shards", default=1, show_default=True)
@click.option("--replication-factor", default=1, show_default=True)
@click.option("--partition-key-field", default="", help="Metadata field holding each point's partition key: points are then identified by (key, id), and every write, get and delete names its --partition-key.")
@click.option("--min-in-sync", default=1, show_default=True, help="Writes need this many live in-sync replicas of their shard (and are acknowledged once that many hold them).")
@click.option("--model", default="", help="Embedding model tag; requests naming another model are refused.")
@router_option
@one_line_errors
def create_collection(name: str, dim: int, metric: str, index: str, params: tuple[str, ...], shards: int, replication_factor: int, partition_key_field: str, min_in_sync: int, model: str, router: str) -> None:
    """Create a collection and place its shards on the live shard servers."""
    from quiver.client import Client

    with Client(router) as client:
        client.create_collection(name, dim, metric=metric, index=index, index_params=parse_params(params), shards=shards,
                                 replication_factor=replication_factor, min_in_sync=min_in_sync, model=model,
                                 partition_key_field=partition_key_field)
    click.echo(f"created collection {name} ({shards} shards, {index}, {metric}, dim {dim})")


@main.command()
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--ids-column", default=None, help="Parquet column holding point ids (default: new unique ids per row).")
@click.option("--overwrite", is_flag=True, help="Replace points whose ids already exist (default: refuse the load).")
@click.option("--batch-size", default=2000, show_default=True)
@router_option
@one_line_errors
def load(name: str, path: Path, ids_column: str | None, overwrite: bool, batch_size: int, router: str) -> None:
    """Bulk-load vectors (.npy, .fvecs, or .parquet with a 'vector' column and metadata columns).

    Rows get new unique ids unless --ids-column names them; ids that already exist in the collection are
    refused unless --overwrite (an upsert would silently replace those points)."""
    from quiver.client import Client

    vectors = read_vectors(path)
    ids, metadata, named = read_ids_and_metadata(path, len(vectors), ids_column)
    if len(set(ids)) != len(ids):
        raise click.ClickException(f"{path.name}: column {ids_column!r} repeats ids; each row needs its own")
    started = time.perf_counter()
    with Client(router, timeout=120) as client:
        if named and not overwrite:
            existing = [p.id for start in range(0, len(ids), 1000) for p in client.get(name, ids[start : start + 1000])]
            if existing:
                raise click.ClickException(
                    f"{len(existing)} of these ids already exist in {name} (e.g. {', '.join(existing[:3])}); "
                    "load with --overwrite to replace them, or give the rows other ids"
                )
        _load_with_progress(client, name, ids, vectors, metadata, batch=batch_size)
    elapsed = time.perf_counter() - started
    click.echo(f"loaded {len(ids)} vectors into {name} in {elapsed:.1f}s ({len(ids) / elapsed:,.0f} vectors/s)")


@main.command()
@click.argument("name")
@click.option("--vectors", "vector_file", type=click.Path(exists=True, path_type=Path), required=True, help="File of query vectors (.npy/.fvecs; for a GloVe word: `quiver search-word`).")
@click.option("--row", "rows", multiple=True, type=int, help="Row(s) of --vectors to use as queries (default 0).")
@click.option("-k", "--k", "k", default=10, show_default=True)
@click.option("--filter", "filter_json", default=None, help='Filter, e.g. \'lang == "en" and year >= 2020\' (or proto3 JSON of quiver.v1.Filter).')
@click.option("--ef-search", default=0)
@click.option("--nprobe", default=0)
@click.option("--partition-key", default="")
@router_option
@one_line_errors
def search(name: str, vector_file: Path, rows: tuple[int, ...], k: int, filter_json: str | None, ef_search: int, nprobe: int, partition_key: str, router: str) -> None:
    """Search a collection and print ids and scores."""
    chosen = list(rows) or [0]
    queries = load_vectors_file(vector_file)[chosen]
    print_results(router, name, queries, [f"row {r}" for r in chosen], k, parse_filter(filter_json), ef_search, nprobe, partition_key)


def print_results(router: str, name: str, queries: np.ndarray, labels: list[str], k: int, flt: Filter | None,
                  ef_search: int, nprobe: int, partition_key: str) -> None:
    from quiver.client import Client

    with Client(router) as client:
        results = client.search(name, queries, k, filter=flt, ef_search=ef_search, nprobe=nprobe, include_metadata=True, partition_key=partition_key)
    for label, result in zip(labels, results):
        click.echo(f"{label}: ({result.strategy}, {result.shards_answered}/{result.shards_asked} shards)")
        for hit in result.hits:
            extra = f"  {json.dumps(hit.metadata, default=list)}" if hit.metadata else ""
            click.echo(f"  {hit.score:8.4f}  {hit.id}{extra}")


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


from quiver import cli_verbs  # noqa: E402 - registers list, describe, drop, count, get, delete on `main`

if __name__ == "__main__":
    main()
