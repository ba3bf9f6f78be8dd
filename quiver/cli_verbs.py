"""The CLI's collection and point verbs: list, describe, drop, count, get, delete (registered on `quiver`).

They print for people by default and `--json` for scripts. `drop`, and a `delete` by filter, ask first
(`--yes` skips the question), because neither can be undone.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from quiver.cli import main, one_line_errors, parse_filter, router_option


def _client(router: str) -> Any:
    from quiver.client import Client

    return Client(router)


def _info_dict(info: Any) -> dict[str, Any]:
    return dataclasses.asdict(info)


def _counts(status: Any, name: str) -> tuple[int, int, int]:
    """(points, shards answering, shards) of a collection's active version, one serving replica per shard."""
    active = next((c.active_version for c in status.collections if c.spec.name == name), None)
    by_shard: dict[int, int] = {}
    shards = set()
    for replica in status.replicas:
        if replica.collection != name or replica.version != active:  # a version being built, or a previous one
            continue
        shards.add(replica.shard)
        if replica.state == "serving":
            by_shard[replica.shard] = max(by_shard.get(replica.shard, 0), replica.point_count)
    return sum(by_shard.values()), len(by_shard), len(shards)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per collection.")
@router_option
@one_line_errors
def list_collections(as_json: bool, router: str) -> None:
    """The collections: dimension, metric, index, shards, replication factor, model."""
    with _client(router) as client:
        infos = client.list_collections()
    if as_json:
        for info in infos:
            click.echo(json.dumps(_info_dict(info)))
        return
    if not infos:
        click.echo("no collections (create one with `quiver create-collection NAME --dim D`)")
        return
    click.echo(f"{'name':<24} {'dim':>5} {'metric':<7} {'index':<7} {'shards':>6} {'rf':>3}  model")
    for info in infos:
        spec = info.spec
        click.echo(f"{spec.name:<24} {spec.dim:>5} {spec.metric:<7} {spec.index:<7} {spec.shards:>6} {spec.replication_factor:>3}  {spec.model or '-'}")


@main.command()
@click.argument("name")
@router_option
@one_line_errors
def describe(name: str, router: str) -> None:
    """A collection's definition (as JSON) and its point count."""
    with _client(router) as client:
        info = client.describe_collection(name)
        points, answering, shards = _counts(client.status(), name)
    described = _info_dict(info)
    described["points"] = points
    described["shards_answering"] = f"{answering}/{shards}"
    click.echo(json.dumps(described, indent=2))


@main.command()
@click.argument("name")
@router_option
@one_line_errors
def count(name: str, router: str) -> None:
    """Live points in a collection (each shard counted once, from a serving replica)."""
    with _client(router) as client:
        client.describe_collection(name)  # NOT_FOUND for a name that does not exist
        points, answering, shards = _counts(client.status(), name)
    if answering < shards:
        raise click.ClickException(f"{name}: only {answering} of {shards} shards answer; {points} points in those")
    click.echo(points)


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@router_option
@one_line_errors
def drop(name: str, yes: bool, router: str) -> None:
    """Drop a collection and every point in it (asks first)."""
    with _client(router) as client:
        client.describe_collection(name)  # a typo fails here, before the question
        if not yes:
            click.confirm(f"drop collection {name!r} and all its points? this cannot be undone", abort=True)
        client.drop_collection(name)
    click.echo(f"dropped {name}")


@main.command()
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.option("--vectors", "include_vectors", is_flag=True, help="Print the stored vectors too.")
@click.option("--partition-key", default="")
@router_option
@one_line_errors
def get(name: str, ids: tuple[str, ...], include_vectors: bool, partition_key: str, router: str) -> None:
    """Points by id, one JSON object per line; ids not found are reported on stderr."""
    with _client(router) as client:
        points = client.get(name, list(ids), include_vectors=include_vectors, partition_key=partition_key)
    for point in points:
        row: dict[str, Any] = {"id": point.id, "metadata": point.metadata}
        if point.vector is not None:
            row["vector"] = [round(float(v), 6) for v in point.vector]
        click.echo(json.dumps(row, default=list))
    missing = [i for i in dict.fromkeys(ids) if i not in {p.id for p in points}]
    if missing:
        click.echo(f"not found: {', '.join(missing)}", err=True)


@main.command()
@click.argument("name")
@click.argument("ids", nargs=-1)
@click.option("--filter", "filter_text", default=None, help='Delete every point matching, e.g. \'year < 2000\'.')
@click.option("--partition-key", default="")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (a delete by filter asks).")
@router_option
@one_line_errors
def delete(name: str, ids: tuple[str, ...], filter_text: str | None, partition_key: str, yes: bool, router: str) -> None:
    """Delete points by id, or every point a filter matches."""
    flt = parse_filter(filter_text)
    if not ids and flt is None:
        raise click.UsageError("name the ids to delete, or give --filter")
    with _client(router) as client:
        if flt is not None and not yes:
            click.confirm(f"delete every point of {name!r} matching {filter_text!r}? this cannot be undone", abort=True)
        deleted = client.delete(name, list(ids), filter=flt, partition_key=partition_key)
    click.echo(f"deleted {deleted} points from {name}")
