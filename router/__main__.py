"""`python -m router` / `quiver-router`: run the router until SIGTERM or Ctrl-C."""
from __future__ import annotations

import click
import uvloop

from quiver.gc_tuning import freeze_startup_heap
from quiver.grpc_server import until_stop_signal
from quiver.logs import configure_logging
from quiver.server_options import config_file_option, log_effective_options, with_environment

from router.config import RouterConfig
from router.server import RouterServer


async def serve(config: RouterConfig) -> None:
    server = RouterServer(config)
    await server.start()
    freeze_startup_heap()  # after recovery: what the server holds from here on is not walked by every GC
    if server.metrics.port is not None:
        print(f"quiver-router metrics on {config.metrics_host}:{server.metrics.port}", flush=True)
    print(f"quiver-router serving on {server.address}", flush=True)
    await until_stop_signal()
    await server.stop(grace=5.0)


@click.command(context_settings={"show_default": True})
@config_file_option
@click.option("--etcd", "etcd_endpoints", required=True, help="Comma-separated etcd endpoints (host:port).")
@click.option("--etcd-root", default="/quiver/", show_default=True, help="Key prefix of this cluster in etcd.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--default-timeout", default=10.0, show_default=True, help="Deadline when the caller sets none (s).")
@click.option("--max-k", default=RouterConfig.max_k, show_default=True, help="Largest k a search may ask for.")
@click.option("--max-queries-per-request", default=RouterConfig.max_queries_per_request, show_default=True, help="Query vectors one search request may carry.")
@click.option("--max-message-bytes", default=RouterConfig.max_message_bytes, show_default=True, help="Largest gRPC message received or sent (callers and shards).")
@click.option("--max-queued-searches", default=RouterConfig.max_queued_searches, show_default=True, help="Searches waiting for the shards; past it, searches are refused with RESOURCE_EXHAUSTED.")
@click.option("--max-concurrent-rpcs", default=RouterConfig.max_concurrent_rpcs, show_default=True, help="RPCs handled at once; past it, gRPC refuses with RESOURCE_EXHAUSTED before any work.")
@click.option("--deadline-admission/--no-deadline-admission", default=RouterConfig.deadline_admission, show_default=True, help="Refuse a search at once when the queue ahead of it would outlast its deadline.")
@click.option("--deadline-admission-share", default=RouterConfig.deadline_admission_share, show_default=True, help="The share of a search's budget its expected answer time may fill to be admitted, at start; it then adapts to the searches answered and missed (0.1 to 0.9).")
@click.option("--max-queued-write-bytes", default=RouterConfig.max_queued_write_bytes, show_default=True, help="Bytes of upserts waiting for the shards; past it, upserts are refused with RESOURCE_EXHAUSTED.")
@click.option("--controller/--no-controller", default=RouterConfig.controller, show_default=True, help="Stand for the controller role (one router holds it): promotes an in-sync replica when a shard's primary is gone.")
@click.option("--hedge/--no-hedge", "hedge_reads", default=RouterConfig.hedge_reads, show_default=True, help="Send a read to a second replica when the first is slower than its recent p95 (at most 5% extra reads).")
@click.option("--batch-server-searches/--no-batch-server-searches", default=RouterConfig.batch_server_searches, show_default=True, help="Send the searches of one query or batch that go to one shard server as one SearchMany call, not one call per partition.")
@click.option("--replace-after-s", default=RouterConfig.replace_after_s, show_default=True, help="As controller: a replica whose server has been gone this long is rebuilt on another server.")
@click.option("--router-id", default="", help="This router's name as a controller candidate (default: host:port).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus /metrics over HTTP on this port (default: off).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address /metrics listens on (0.0.0.0 in a container).")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG logs every RPC with its request id and time.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True, help="JSON lines (one event per line) or plain text.")
@click.option("--slow-rpc-ms", default=1000.0, show_default=True, help="RPCs slower than this are logged at WARNING (the slow-query log).")
def main(
    etcd_endpoints: str, etcd_root: str, host: str, port: int, default_timeout: float, max_k: int,
    max_queries_per_request: int, max_message_bytes: int, max_queued_searches: int,
    max_concurrent_rpcs: int, deadline_admission: bool, deadline_admission_share: float, max_queued_write_bytes: int, controller: bool, hedge_reads: bool, batch_server_searches: bool, replace_after_s: float, router_id: str, metrics_port: int | None, metrics_host: str, log_level: str, log_format: str, slow_rpc_ms: float,
) -> None:
    configure_logging(log_level, log_format)
    log_effective_options(click.get_current_context())
    config = RouterConfig(
        etcd_endpoints=tuple(e for e in etcd_endpoints.split(",") if e),
        etcd_root=etcd_root,
        host=host,
        port=port,
        default_timeout_s=default_timeout,
        max_k=max_k,
        max_queries_per_request=max_queries_per_request,
        max_message_bytes=max_message_bytes,
        max_queued_searches=max_queued_searches,
        max_concurrent_rpcs=max_concurrent_rpcs,
        deadline_admission=deadline_admission,
        deadline_admission_share=deadline_admission_share,
        max_queued_write_bytes=max_queued_write_bytes,
        controller=controller,
        replace_after_s=replace_after_s,
        hedge_reads=hedge_reads,
        batch_server_searches=batch_server_searches,
        router_id=router_id,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        slow_rpc_s=slow_rpc_ms / 1e3,
    )
    uvloop.run(serve(config))


with_environment(main, "QUIVER_ROUTER")

if __name__ == "__main__":
    main()
