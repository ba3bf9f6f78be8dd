"""`quiver-loadtest`: load tests of a running Quiver cluster, and calibration of the sizing planner.

    quiver-loadtest run --dataset glove-50 --cluster local:3 --mode closed --concurrency 8 --duration 30
    quiver-loadtest run --dataset gaussian:1M:128 --router 127.0.0.1:7000 --index ivf_pq --mode open --rate 500
    quiver-loadtest run --dataset glove-50 --cluster local:3 --sweep ef_search=16,32,64,128,256 --with-raw --plot out/
    quiver-loadtest calibrate --sizes 100000,300000 --validate 1000000
    quiver-loadtest calibrate-served --kinds hnsw,ivf_pq --sizes 100000,300000 --validate 1000000

`run` bulk-loads the dataset into a new collection (unless --skip-load), drives queries, and reports
QPS, latency percentiles, recall@k, errors and partial results as JSON (stdout, or --json FILE) plus
a table (stderr when the JSON goes to stdout). See loadtest/README.md for a sizing study end to end.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click

from loadtest.phases import CollectionSetup, LoadResult, QuerySettings, bulk_load, query_phase
from loadtest.report import base_report, format_report, phase_report, write_json
from loadtest.sources import is_synthetic, parse_count, resolve_dataset
from loadtest.sweep import parse_sweep, run_sweep, with_pareto
from loadtest.workload import Workload, build_workload

GLOVE_GT_K = 100  # the demo's cached GloVe ground truth depth


def _echo(text: str) -> None:
    click.echo(text, err=True)


@dataclass(frozen=True)
class Target:
    address: str
    local_servers: int | None = None  # shard servers started for this run
    shard_pids: tuple[int, ...] = ()


@contextlib.contextmanager
def cluster_target(cluster: str | None, router: str | None, data_dir: Path | None) -> Iterator[Target]:
    """The router to drive: --router ADDR, or a LocalCluster started (and stopped) for --cluster local:N."""
    if cluster is None:
        if router is None:
            raise click.UsageError("give --router ADDR or --cluster local:N")
        yield Target(router)
        return
    kind, _, count = cluster.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise click.BadParameter(f"expected local:N, got {cluster!r}", param_hint="--cluster")
    from quiver.local_cluster import LocalCluster

    directory = data_dir or Path(tempfile.mkdtemp(prefix="quiver-loadtest-"))
    _echo(f"starting a local cluster ({count} shard servers) in {directory} ...")
    try:
        with LocalCluster(directory, shards=int(count)) as running:
            _echo(f"cluster up: router {running.router_address}")
            pids = tuple(s.process.pid for s in running.shard_servers if s.process is not None)
            yield Target(running.router_address, int(count), pids)
    finally:
        if data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)


async def drive(
    target: Target, setup: CollectionSetup, workload: Workload, settings: QuerySettings, *, load: bool, recreate: bool,
    load_batch: int, load_concurrency: int, timeout: float, sweep: tuple[str, list[int]] | None, progress: bool,
) -> tuple[LoadResult | None, dict[str, Any]]:
    """Bulk load (optional), then one query phase or a sweep; returns the load result and report parts."""
    from loadtest.cluster_memory import rss_bytes, shard_estimates
    from quiver.client import AsyncClient
    from quiver.errors import NotFound

    parts: dict[str, Any] = {"memory": {}}
    async with AsyncClient(target.address, timeout=timeout) as client:
        loaded = None
        if load:
            if recreate:
                with contextlib.suppress(NotFound):
                    await client.drop_collection(setup.name)
            rss_before = rss_bytes(target.shard_pids)
            loaded = await bulk_load(client, setup, workload, batch=load_batch, concurrency=load_concurrency, progress=progress)
            if target.shard_pids:
                growth = rss_bytes(target.shard_pids) - rss_before
                parts["memory"].update(shard_rss_growth_bytes=growth, shard_rss_bytes_per_vector=growth / loaded.vectors)
            _echo(f"loaded {loaded.vectors:,} vectors in {loaded.seconds:.1f} s ({loaded.vectors_per_s:,.0f} vectors/s)")
        parts["memory"]["shard_estimates"] = await shard_estimates(client, setup.name)
        if sweep is None:
            parts.update(phase_report(await query_phase(client, setup.name, workload, settings), workload))
            return loaded, parts
        knob, values = sweep

        def show(row: dict[str, Any]) -> None:
            recall = "-" if row["recall"] is None else f"{row['recall']:.4f}"
            _echo(f"  {knob}={row['value']}: recall {recall}, {row['qps']:,.1f} QPS, p99 {row['p99_ms']} ms, {row['errors']} errors")

        phases, frontier = await run_sweep(client, setup.name, workload, settings, knob, values, progress=show)
        parts["sweep"] = {"knob": knob, "k": workload.k, "points": phases, "frontier": frontier, "raw": None}
        return loaded, parts


def raw_rows(workload: Workload, setup: CollectionSetup, knob: str, values: list[int], duration: float) -> list[dict[str, Any]]:
    from loadtest.raw_index import build_raw, measure_raw

    _echo(f"building the raw in-process {setup.index} index on the same data ...")
    index, seconds = build_raw(workload.dataset, setup.index, setup.params)
    _echo(f"  built in {seconds:.1f} s")
    rows = []
    for value in values:
        rows.append(measure_raw(index, workload.dataset, workload.k, knob, value, duration))
        _echo(f"  raw {knob}={value}: recall {rows[-1]['recall']:.4f}, {rows[-1]['qps']:,.1f} QPS")
    return with_pareto(rows)


def parse_params(pairs: tuple[str, ...]) -> dict[str, int]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise click.BadParameter(f"{pair!r}: expected NAME=INTEGER, e.g. m=16", param_hint="--param")
        params[key.strip()] = int(value)
    return params


@click.group()
def main() -> None:
    """Load tests of a Quiver cluster, and calibration of the sizing planner."""


@main.command()
@click.option("--dataset", "dataset_name", default="glove-50", show_default=True, help="glove-50 | gaussian:N:DIM[:CLUSTERS] | PATH (.npy/.fvecs/.bvecs/.hdf5).")
@click.option("--queries-file", type=click.Path(exists=True, path_type=Path), help="Query vectors for a PATH dataset (default: a fixed-seed hold-out).")
@click.option("--ground-truth", "ground_truth_file", type=click.Path(exists=True, path_type=Path), help="Ground truth ids (.ivecs/.npy) for a PATH dataset (default: computed, cached).")
@click.option("--n-base", type=int, default=None, help="glove-50: load only a fixed-seed subset of this many base vectors.")
@click.option("--queries", "n_queries", type=int, default=None, help="Number of query vectors (default 10000 for glove-50, else 1000).")
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default=None, help="Override the dataset's metric (gaussian/files: l2).")
@click.option("-k", "--k", "k", default=10, show_default=True)
@click.option("--gt-k", type=int, default=None, help="Ground-truth depth to compute/cache (default k; 100 for glove-50).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Dataset/ground-truth cache (default $QUIVER_CACHE or ~/.cache/quiver).")
@click.option("--cluster", default=None, help="local:N starts a local cluster of N shard servers for the run.")
@click.option("--router", default=None, help="Router address of a running cluster (host:port).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Data directory for --cluster (kept); default a temporary one (removed).")
@click.option("--collection", default="loadtest", show_default=True)
@click.option("--index", type=click.Choice(["hnsw", "ivf_pq", "flat"]), default="hnsw", show_default=True)
@click.option("--param", "params", multiple=True, help="Index parameter NAME=VALUE (hnsw: m, ef_construction, ef_search; ivf_pq: nlist, m, nbits, nprobe, train_size, refine).")
@click.option("--shards", type=int, default=None, help="Collection shards (default: N of --cluster local:N, else 1).")
@click.option("--replication-factor", default=1, show_default=True)
@click.option("--skip-load", is_flag=True, help="Use the collection as it is (loaded earlier from the same dataset).")
@click.option("--recreate", is_flag=True, help="Drop the collection first if it exists.")
@click.option("--load-batch", default=2000, show_default=True)
@click.option("--load-concurrency", default=4, show_default=True, help="Upsert batches in flight during the bulk load.")
@click.option("--mode", type=click.Choice(["closed", "open"]), default="closed", show_default=True)
@click.option("--concurrency", default=4, show_default=True, help="Closed loop: concurrent clients.")
@click.option("--rate", type=float, default=0.0, help="Open loop: target queries/s (Poisson arrivals).")
@click.option("--max-inflight", default=1000, show_default=True, help="Open loop: calls in flight at most (latency still counts from the intended time).")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds of query load (per knob value in a sweep).")
@click.option("--warmup", type=float, default=0.0, show_default=True, help="Seconds of the same load before measuring, not reported.")
@click.option("--ef-search", default=0, help="hnsw ef_search for every query (0: collection default).")
@click.option("--nprobe", default=0, help="ivf_pq nprobe for every query (0: collection default).")
@click.option("--filter-selectivity", type=float, default=None, help="Load a sel_bucket field and filter with an eq that selects this fraction of points.")
@click.option("--filter-fraction", type=float, default=1.0, show_default=True, help="Share of queries that carry the filter.")
@click.option("--write-rate", type=float, default=0.0, help="Concurrent write stream, points/s (re-upserts existing points).")
@click.option("--write-batch", default=10, show_default=True)
@click.option("--allow-partial", is_flag=True, help="Accept partial results when a shard does not answer (counted).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Per-call deadline, seconds.")
@click.option("--seed", default=0, show_default=True, help="Seed of the arrival schedule and write choices.")
@click.option("--sweep", "sweep_spec", default=None, help="ef_search=16,32,64 or nprobe=1,4,16: one query phase per value, recall/QPS frontier.")
@click.option("--with-raw", is_flag=True, help="With --sweep: also measure the same index in-process (one thread) on the same data.")
@click.option("--keep-ids", is_flag=True, help="Put every call's returned ids in the JSON report.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the JSON report here (default: stdout).")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), default=None, help="Write PNG charts here (latency CDF; recall vs QPS for sweeps).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run(**options: Any) -> None:
    """Bulk-load a dataset into a cluster and drive query load against it through the router."""
    try:
        report = _run(**options)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    text = write_json(report, options["json_path"])
    table = format_report(report)
    if options["json_path"] is None:
        sys.stdout.write(text)
        _echo(table)
    else:
        click.echo(table)
    if options["plot_dir"] is not None:
        from loadtest.plots import write_plots

        for path in write_plots(report, options["plot_dir"]):
            _echo(f"wrote {path}")


def _run(**o: Any) -> dict[str, Any]:
    import uvloop

    from quiver.errors import QuiverError

    name = o["dataset_name"]
    n_queries = o["n_queries"] or (10_000 if name == "glove-50" else 1_000)
    gt_k = o["gt_k"] or (max(o["k"], GLOVE_GT_K) if name == "glove-50" else o["k"])
    _echo(f"preparing {name} (ground truth is cached after the first run) ...")
    dataset = resolve_dataset(
        name, n_queries=n_queries, gt_k=gt_k, metric=o["metric"], n_base=o["n_base"], queries_file=o["queries_file"],
        ground_truth_file=o["ground_truth_file"], cache_dir=o["cache_dir"],
    )
    workload = build_workload(dataset, o["k"], o["filter_selectivity"], o["filter_fraction"])
    settings = QuerySettings(
        mode=o["mode"], duration=o["duration"], concurrency=o["concurrency"], rate=o["rate"], max_inflight=o["max_inflight"],
        warmup=o["warmup"], ef_search=o["ef_search"], nprobe=o["nprobe"], allow_partial=o["allow_partial"],
        write_rate=o["write_rate"], write_batch=o["write_batch"], seed=o["seed"], keep_ids=o["keep_ids"],
    )
    sweep = parse_sweep(o["sweep_spec"]) if o["sweep_spec"] else None
    if o["with_raw"] and sweep is None:
        raise click.UsageError("--with-raw needs --sweep")
    params = parse_params(o["params"])
    with cluster_target(o["cluster"], o["router"], o["data_dir"]) as target:
        setup = CollectionSetup(o["collection"], o["index"], params, o["shards"] or target.local_servers or 1, o["replication_factor"])
        try:
            loaded, parts = uvloop.run(drive(
                target, setup, workload, settings, load=not o["skip_load"], recreate=o["recreate"],
                load_batch=o["load_batch"], load_concurrency=o["load_concurrency"], timeout=o["timeout"], sweep=sweep,
                progress=not o["no_progress"],
            ))
        except QuiverError as error:
            raise click.ClickException(f"{type(error).__name__}: {error}") from None
    report = base_report(
        {"name": name, "resolved": dataset.name, "metric": dataset.metric, "base": len(dataset.base), "dim": dataset.dim,
         "queries": len(dataset.queries), "ground_truth_k": int(dataset.ground_truth.shape[1]), "synthetic": is_synthetic(name)},
        {"name": setup.name, "index": setup.index, "params": setup.params, "shards": setup.shards,
         "replication_factor": setup.replication_factor, "router": target.address,
         "local_cluster_servers": target.local_servers},
        loaded,
    )
    report.update(parts)
    if sweep is not None and o["with_raw"]:
        report["sweep"]["raw"] = raw_rows(workload, setup, sweep[0], sweep[1], o["duration"])
        from loadtest.raw_index import NOTE

        report["sweep"]["raw_note"] = NOTE
    return report


@main.command()
@click.option("--sizes", default="100000,300000", show_default=True, help="Calibration sizes (comma-separated; 1e5, 300k allowed). The largest is the reference point.")
@click.option("--validate", "validate_sizes", default="1000000", show_default=True, help="Sizes not used in the fit, measured to check the predictions ('' for none).")
@click.option("--kinds", default="hnsw,ivf_pq,flat", show_default=True)
@click.option("--dim", default=128, show_default=True)
@click.option("--clusters", default=256, show_default=True, help="Gaussian-mixture clusters of the synthetic data.")
@click.option("--seed", default=7, show_default=True)
@click.option("--hnsw-m", default=16, show_default=True)
@click.option("--ef-construction", default=200, show_default=True)
@click.option("--ef-search", default=64, show_default=True)
@click.option("--nlist", default=4096, show_default=True)
@click.option("--nprobe", default=16, show_default=True)
@click.option("--pq-m", default=16, show_default=True)
@click.option("--nbits", default=8, show_default=True)
@click.option("--queries", default=1000, show_default=True, help="Query vectors for the QPS measurement.")
@click.option("--qps-seconds", type=float, default=5.0, show_default=True, help="Seconds of single-thread queries per build.")
@click.option("--tolerance", type=float, default=15.0, show_default=True, help="Memory validation acceptance, percent.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Coefficients file (default loadtest/calibration.json); details go next to it.")
@click.option("--refit", type=click.Path(exists=True, path_type=Path), default=None,
              help="Fit and validate again from an earlier run's details JSON (measures nothing), keeping --out's served "
                   "coefficients (refit those after: calibrate-served --refit).")
def calibrate(**o: Any) -> None:
    """Measure builds on this machine (synthetic data), fit the sizing coefficients, validate at a new size."""
    from loadtest.calibrate import CalibrationParams, calibrate as run_calibration, details_path, format_summary, refit
    from loadtest.sizing import DEFAULT_CALIBRATION

    if o["refit"]:
        out = o["out"] or DEFAULT_CALIBRATION
        details = refit(json.loads(o["refit"].read_text()), out)
        click.echo(format_summary(details))
        click.echo(f"wrote {out} and {details_path(out)}")
        return
    try:
        sizes = [parse_count(s) for s in o["sizes"].split(",") if s.strip()]
        validate = [parse_count(s) for s in o["validate_sizes"].split(",") if s.strip()]
        kinds = [k.strip() for k in o["kinds"].split(",") if k.strip()]
        params = CalibrationParams(
            dim=o["dim"], clusters=o["clusters"], seed=o["seed"], hnsw_m=o["hnsw_m"], ef_construction=o["ef_construction"],
            ef_search=o["ef_search"], nlist=o["nlist"], nprobe=o["nprobe"], pq_m=o["pq_m"], nbits=o["nbits"],
            queries=o["queries"], qps_seconds=o["qps_seconds"],
        )
        out = o["out"] or DEFAULT_CALIBRATION
        details = run_calibration(sizes, validate, kinds, params, out, tolerance_percent=o["tolerance"], log=_echo)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(format_summary(details))
    click.echo(f"wrote {out} and {details_path(out)}")


@main.command("calibrate-served")
@click.option("--sizes", default="100000,300000", show_default=True, help="Fit sizes (comma-separated; 1e5, 300k allowed).")
@click.option("--validate", "validate_sizes", default="1000000", show_default=True, help="Sizes not used in the fit, measured to check the plan ('' for none).")
@click.option("--kinds", default="hnsw,ivf_pq", show_default=True)
@click.option("--clients", default=8, show_default=True, help="Client threads for the query measurement, one channel each.")
@click.option("--qps-seconds", type=float, default=10.0, show_default=True)
@click.option("--bench-memory", "bench_memory", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A loadtest.bench_memory JSON result to check the plan against too (repeatable).")
@click.option("--tolerance", type=float, default=15.0, show_default=True, help="Validation acceptance, percent.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Coefficients file to update (default loadtest/calibration.json).")
@click.option("--results", type=click.Path(path_type=Path), default=None, help="Also write the details and the table here (FILE.json, FILE.txt).")
@click.option("--refit", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Fit and validate again from the measurements of earlier runs' details JSON (measures nothing); "
                   "repeatable: per kind, the last run that measured it.")
@click.option("--accept-misses", is_flag=True,
              help="Write the coefficients even if a validation figure is out of tolerance (those kinds are marked "
                   "unvalidated, and their plans say so).")
def calibrate_served_command(**o: Any) -> None:
    """Measure shard processes loaded and searched through a router (synthetic data, the bare calibration's
    parameters), fit the planner's served coefficients onto the bare ones, validate at new sizes.

    The details are always written; the coefficients only if the validation held (or --accept-misses), and a
    miss exits with status 1."""
    import dataclasses
    import json

    from loadtest.calibrate import details_path
    from loadtest.calibrate_served import ServedParams, calibrate_served, format_summary, misses, refit
    from loadtest.sizing import DEFAULT_CALIBRATION, load_coefficients, save_coefficients

    out = o["out"] or DEFAULT_CALIBRATION
    try:
        sizes = [parse_count(s) for s in o["sizes"].split(",") if s.strip()]
        validate = [parse_count(s) for s in o["validate_sizes"].split(",") if s.strip()]
        kinds = [k.strip() for k in o["kinds"].split(",") if k.strip()]
        bare = load_coefficients(out)
        bare_details = json.loads(details_path(out).read_text()) if details_path(out).exists() else {}
        params = ServedParams.of_bare_calibration(bare_details, clients=o["clients"], qps_seconds=o["qps_seconds"])
        if o["refit"]:
            coeffs, details = refit([json.loads(path.read_text()) for path in o["refit"]], bare, bench_memory=o["bench_memory"],
                                    tolerance_percent=o["tolerance"])
        else:
            coeffs, details = calibrate_served(sizes, validate, kinds, params, bare, bench_memory=o["bench_memory"],
                                               tolerance_percent=o["tolerance"], log=_echo)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    missed = misses(details["validation"])
    served_details = out.with_name(out.stem + ".served.details.json")
    summary = format_summary(coeffs, details)
    click.echo(summary)
    if o["results"]:
        o["results"].with_suffix(".json").write_text(json.dumps(details | {"coefficients_all": dataclasses.asdict(coeffs)}, indent=2) + "\n")
        o["results"].with_suffix(".txt").write_text(summary + "\n")
    if missed and not o["accept_misses"]:
        rejected = out.with_name(out.stem + ".served.rejected.json")
        rejected.write_text(json.dumps(details, indent=2) + "\n")
        click.echo(f"validation out of tolerance: {'; '.join(missed)}", err=True)
        click.echo(f"{out} left as it was; the run is in {rejected} (--refit it, or rerun with --accept-misses)", err=True)
        raise SystemExit(1)
    save_coefficients(coeffs, out)
    served_details.write_text(json.dumps(details, indent=2) + "\n")
    click.echo(f"wrote {out} and {served_details}" + (f" (accepted misses: {'; '.join(missed)})" if missed else ""))


if __name__ == "__main__":
    main()
