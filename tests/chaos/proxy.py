"""A TCP proxy the chaos run puts in front of each shard server, to partition one from the network.

Each shard server advertises its proxy's address, so the router and the other servers reach it only
through the proxy (its etcd connection goes direct: a server cut off from its peers but not from etcd is
the partition that leases alone cannot see). Run as `python -m tests.chaos.proxy`; commands on stdin,
one per line, each answered "ok" (or "error ...") on stdout:

    listen NAME LISTEN_PORT TARGET_PORT   forward 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT
    cut NAME                              partition: nothing passes either way, new connections hang
    heal NAME                             drop the connections held in the cut, let traffic pass again

Held connections are dropped at heal, not resumed: their callers have given up (deadlines), and a write
delivered seconds after its caller was told "deadline exceeded" is a case the chaos ledger's checker
cannot judge (it may take effect after a newer acknowledged write of the same id, which is linearizable
but indistinguishable from a lost update without conditional writes).
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

_HOST = "127.0.0.1"


@dataclass
class Link:
    target_port: int
    open: asyncio.Event = field(default_factory=asyncio.Event)
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    held: set[asyncio.StreamWriter] = field(default_factory=set)  # connections that saw a cut

    def __post_init__(self) -> None:
        self.open.set()

    def cut(self) -> None:
        self.open.clear()
        self.held = set(self.connections)

    def heal(self) -> None:
        for writer in self.held:
            writer.transport.abort()
        self.held = set()
        self.open.set()


async def _pump(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await link.open.wait()
            data = await reader.read(65536)
            if not data:
                break
            if not link.open.is_set():
                # Cut while this was in flight: it is lost, like the packets of a partition.
                link.held.add(writer)
                await link.open.wait()
                break
            peer.write(data)
            await peer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        peer.close()
        writer.close()


async def _serve(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if not link.open.is_set():
        # Made during a cut, it hangs as a SYN to an unreachable host would; at heal it is dropped, so what
        # its caller sent meanwhile is never delivered late.
        await link.open.wait()
        writer.transport.abort()
        return
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(_HOST, link.target_port)
    except OSError:
        writer.close()
        return
    link.connections.update((writer, upstream_writer))
    try:
        await asyncio.gather(_pump(link, reader, writer, upstream_writer), _pump(link, upstream_reader, upstream_writer, writer))
    finally:
        link.connections.difference_update((writer, upstream_writer))
        link.held.difference_update((writer, upstream_writer))


async def main() -> None:
    links: dict[str, Link] = {}
    servers: list[asyncio.base_events.Server] = []
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode():
        words = line.split()
        try:
            if words[0] == "listen":
                name, listen_port, target_port = words[1], int(words[2]), int(words[3])
                link = links[name] = Link(target_port)
                servers.append(await asyncio.start_server(lambda r, w, link=link: _serve(link, r, w), _HOST, listen_port))
            elif words[0] == "cut":
                links[words[1]].cut()
            elif words[0] == "heal":
                links[words[1]].heal()
            else:
                raise ValueError(f"unknown command {words[0]!r}")
            print("ok", flush=True)
        except (IndexError, KeyError, ValueError, OSError) as error:
            print(f"error {error!r}", flush=True)
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
