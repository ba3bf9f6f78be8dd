"""The serving floor: what gRPC alone costs a search on this machine, with no index and no Quiver code.

    python -m loadtest.grpc_floor [--relay-to HOST:PORT,...] [--hits 10] [--dim 50]

An echo server speaks the Router service's Search, and answers every request with a canned answer of
--hits hits a query, shaped as the router's real one (6-byte ids, scores, the strategy). Given --relay-to,
it is a relay instead: it parses the request, sends it to every address at once over grpc.aio, as the router
fans out to its shards, waits for all of them, and answers the first backend's answer, merging nothing.
Both run the same way as Quiver's servers (grpc.aio on uvloop, one process each), so an echo behind a
client is the floor of one hop (a node), and a relay in front of N echoes the floor of router + N shards.

bench_peers measures them beside Quiver in the same run: targets 1 and 2 are bounded by these figures.
"""
from __future__ import annotations

import asyncio
import sys

import click
import grpc
import uvloop

from quiver.grpc_server import bind, server_options, until_stop_signal
from quiver.v1 import router_pb2, router_pb2_grpc, types_pb2

MAX_MESSAGE_BYTES = 64 * 2**20


def canned_answer(queries: int, hits: int) -> router_pb2.RouterSearchResponse:
    result = types_pb2.QueryResult(
        ids=[f"{100000 + i}" for i in range(hits)], scores=[1.0 - i / 100 for i in range(hits)], strategy=types_pb2.ANN,
    )
    return router_pb2.RouterSearchResponse(results=[result] * queries)


class Echo(router_pb2_grpc.RouterServicer):
    def __init__(self, hits: int, dim: int) -> None:
        self._hits = hits
        self._query_bytes = 4 * dim
        self._answers: dict[int, router_pb2.RouterSearchResponse] = {}

    async def Search(self, request: router_pb2.RouterSearchRequest, context: grpc.aio.ServicerContext) -> router_pb2.RouterSearchResponse:
        n = max(1, len(request.queries) // self._query_bytes)
        answer = self._answers.get(n)
        if answer is None:
            answer = self._answers[n] = canned_answer(n, self._hits)
        return answer


class Relay(router_pb2_grpc.RouterServicer):
    def __init__(self, backends: list[str]) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self._stubs = [router_pb2_grpc.RouterStub(grpc.aio.insecure_channel(b, options=options)) for b in backends]

    async def Search(self, request: router_pb2.RouterSearchRequest, context: grpc.aio.ServicerContext) -> router_pb2.RouterSearchResponse:
        answers = await asyncio.gather(*(stub.Search(request, timeout=30) for stub in self._stubs))
        return answers[0]


async def serve(host: str, port: int, relay_to: list[str], hits: int, dim: int) -> None:
    server = grpc.aio.server(options=server_options(MAX_MESSAGE_BYTES))
    router_pb2_grpc.add_RouterServicer_to_server(Relay(relay_to) if relay_to else Echo(hits, dim), server)
    bound = bind(server, host, port)
    await server.start()
    print(f"grpc floor {'relay' if relay_to else 'echo'} serving on {host}:{bound}", flush=True)
    await until_stop_signal()
    await server.stop(grace=1.0)


@click.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=0, help="0 picks a free port.")
@click.option("--relay-to", default="", help="Comma-separated backends: relay every request to all of them.")
@click.option("--hits", default=10, help="Hits a query in the echo's canned answer.")
@click.option("--dim", default=50, help="Dimension of the queries (the echo answers one result per query).")
def main(host: str, port: int, relay_to: str, hits: int, dim: int) -> None:
    uvloop.run(serve(host, port, [b for b in relay_to.split(",") if b], hits, dim))


if __name__ == "__main__":
    sys.exit(main())
