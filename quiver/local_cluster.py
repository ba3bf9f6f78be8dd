"""A whole Quiver cluster on one machine, as real processes on loopback: etcd, N shard servers, a router.

Used by `quiver up` and by the end-to-end tests, so both start the cluster the way users do. Each server
process prints one "serving on HOST:PORT" line that the launcher waits for; logs go to files in the data
directory. Stopping sends SIGTERM (servers go NOT_SERVING, drain, snapshot) and escalates to SIGKILL.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from quiver.child_process import command_dying_with_this_process
from quiver.etcd_process import EtcdProcess

SERVING = re.compile(r"serving on (\S+)")
METRICS = re.compile(r"metrics on (\S+)")  # printed before SERVING when --metrics-port is given
RESTART_MARK = "\n--- restart ---\n"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One `python -m shard|router` process; restartable with the same arguments."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.metrics_address = ""

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as marker:
            marker.write(RESTART_MARK)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command_dying_with_this_process([sys.executable, *self.args]),
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_path.read_text(errors="replace").rsplit(RESTART_MARK, 1)[-1]
            match = SERVING.search(log)
            if match:
                self.address = match.group(1)
                metrics = METRICS.search(log)
                self.metrics_address = metrics.group(1) if metrics else ""
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.args)} exited with {self.process.returncode}; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"{' '.join(self.args)} did not start within {timeout}s; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown (crash tests)."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class LocalCluster:
    def __init__(
        self, data_dir: Path, shards: int = 3, router_port: int = 0, etcd_port: int | None = None, host: str = "127.0.0.1",
        shard_args: tuple[str, ...] = (), router_args: tuple[str, ...] = (),
        advertise: Callable[[int], str] | None = None, routers: int = 1, nodes: int = 0, node_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.etcd = EtcdProcess(data_dir / "etcd", client_port=etcd_port)
        self.shard_servers: list[ServerProcess] = []
        self.router: ServerProcess | None = None
        self.routers: list[ServerProcess] = []  # self.router first, then the others asked for
        self._router_count = routers
        # Node mode (router/node.py): processes that are a shard server and a router at once. They are listed
        # in `nodes`, and in `routers` (after the plain routers) and `shard_servers` too.
        self._node_count = nodes
        self.nodes: list[ServerProcess] = []
        self._shards = shards
        self._router_port = router_port
        self._node_args = node_args  # extra `router.node` flags for every node
        self._shard_args = shard_args  # extra `quiver-shard` flags for every shard server (budgets, say)
        self._router_args = router_args
        self._advertise = advertise  # shard index -> the address it registers (a proxy in front of it, say)

    @property
    def router_address(self) -> str:
        assert self.router is not None
        return self.router.address

    @property
    def router_addresses(self) -> list[str]:
        return [r.address for r in self.routers]

    def shard_server(self, index: int) -> ServerProcess:
        port = free_port(self.host)
        return ServerProcess(
            [
                "-m", "shard",
                "--data-dir", str(self.data_dir / f"shard-{index}"),
                "--host", self.host,
                "--port", str(port),
                "--etcd", self.etcd.endpoint,
                "--server-id", f"shard-{index}",
                "--lease-ttl", "3",
                *(("--advertise", self._advertise(index)) if self._advertise else ()),
                *self._shard_args,
            ],
            self.data_dir / "logs" / f"shard-{index}.log",
        )

    def start(self) -> "LocalCluster":
        try:
            self.etcd.start()
            self.shard_servers = [self.shard_server(i) for i in range(self._shards)]
            for server in self.shard_servers:
                server.start()
            for n in range(self._router_count):
                port = (self._router_port if n == 0 else 0) or free_port(self.host)
                self.routers.append(ServerProcess(
                    ["-m", "router", "--etcd", self.etcd.endpoint, "--host", self.host, "--port", str(port), *self._router_args],
                    self.data_dir / "logs" / ("router.log" if n == 0 else f"router-{n}.log"),
                ).start())
            for n in range(self._node_count):
                node = ServerProcess(
                    [
                        "-m", "router.node", "--data-dir", str(self.data_dir / f"node-{n}"), "--etcd", self.etcd.endpoint,
                        "--host", self.host, "--port", str((self._router_port if n == 0 and not self.routers else 0) or free_port(self.host)),
                        "--server-id", f"node-{n}", "--lease-ttl", "3", *self._node_args,
                    ],
                    self.data_dir / "logs" / f"node-{n}.log",
                ).start()
                self.nodes.append(node)
                self.routers.append(node)
                self.shard_servers.append(node)
            self.router = self.routers[0]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for router in self.routers:  # nodes among them: a second stop of a stopped process returns at once
            router.stop()
        for server in self.shard_servers:
            server.stop()
        self.etcd.stop()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
