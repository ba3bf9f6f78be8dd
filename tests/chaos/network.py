"""The chaos run's side of tests/chaos/proxy.py: one proxy process with a listener per shard server."""
from __future__ import annotations

import subprocess
import sys
import threading

from quiver.child_process import command_dying_with_this_process
from quiver.local_cluster import ServerProcess, free_port


class Network:
    """Gives each shard server (by index) an address in front of it that can be cut off and healed."""

    def __init__(self) -> None:
        self._ports: dict[int, int] = {}
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            command_dying_with_this_process([sys.executable, "-m", "tests.chaos.proxy"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def address(self, index: int) -> str:
        """The address shard server `index` advertises (its proxy's)."""
        if index not in self._ports:
            self._ports[index] = free_port("127.0.0.1")
        return f"127.0.0.1:{self._ports[index]}"

    def connect(self, index: int, server: ServerProcess) -> None:
        """Forward server `index`'s proxy address to the port it listens on."""
        target = int(server.args[server.args.index("--port") + 1])
        self._command(f"listen shard-{index} {self._ports[index]} {target}")

    def cut(self, server_id: str) -> None:
        self._command(f"cut {server_id}")

    def heal(self, server_id: str) -> None:
        self._command(f"heal {server_id}")

    def _command(self, line: str) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
            reply = self._process.stdout.readline().strip()
        if reply != "ok":
            raise RuntimeError(f"proxy: {line!r} answered {reply!r}")

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(10)
