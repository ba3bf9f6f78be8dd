"""A cluster survives restarts: `quiver up` stopped and started again on its data directory serves every
collection with the same answers; a shard server that comes back on another port is found again; and
stopping or killing `quiver up` leaves none of the processes it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quiver.client import AsyncClient
from quiver.local_cluster import LocalCluster, ServerProcess, free_port
from tests.data_fixtures import glove_subset
from tests.eventually import assert_eventually, assert_eventually_async

N = 3000
QUIVER = Path(sys.executable).with_name("quiver")


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class QuiverUp:
    """`quiver up` as a user runs it, in its own process."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.log = data_dir.parent / f"{data_dir.name}-up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "QuiverUp":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(QUIVER), "up", "--data-dir", str(self.data_dir), "--shards", "3", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        assert_eventually(lambda: "Quiver is up" in self.log.read_text().rsplit("stopping...", 1)[-1], timeout=90, interval=0.2)
        return self

    @property
    def router(self) -> str:
        return f"127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.process.wait(60)

    def kill_all_left(self, pids: list[int]) -> None:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def load_collections(router: str) -> dict[str, list[list[str]]]:
    data = glove_subset()
    answers = {}
    async with AsyncClient(router, timeout=60) as client:
        for rf in (1, 2, 3):
            name = f"rf{rf}"
            await client.create_collection(name, 50, index="hnsw", shards=3, replication_factor=rf)
            await client.upsert(name, [f"w{i}" for i in range(N)], data.base[:N], [{"i": i} for i in range(N)], batch_size=1000)
            answers[name] = [r.ids for r in await client.search(name, data.queries[:20], 10)]
    return answers


async def same_answers(router: str, expected: dict[str, list[list[str]]]) -> None:
    data = glove_subset()
    async with AsyncClient(router, timeout=30) as client:
        for name, ids in expected.items():
            results = await client.search(name, data.queries[:20], 10)
            assert [r.ids for r in results] == ids, name
            assert not any(r.partial for r in results)
            points = await client.get(name, [f"w{i}" for i in range(0, N, 7)])
            assert [p.id for p in points] == [f"w{i}" for i in range(0, N, 7)]
            assert [p.metadata["i"] for p in points] == list(range(0, N, 7))
        status = await client.status()
    for name in expected:
        replicas = [r for r in status.replicas if r.collection == name]
        rf = int(name[2:])
        assert len(replicas) == 3 * rf and all(r.state == "serving" for r in replicas)
        assert sum(r.point_count for r in replicas) == N * rf


async def test_quiver_up_stopped_and_started_on_its_data_directory_serves_every_collection_again(tmp_path):
    up = QuiverUp(tmp_path / "cluster", free_port()).start()
    children = children_of(up.process.pid)  # type: ignore[union-attr]
    try:
        answers = await load_collections(up.router)
        up.signal(signal.SIGTERM)  # what systemd, docker and CI send
        assert up.process.returncode == 0  # type: ignore[union-attr]
        assert_eventually(lambda: not any(alive(pid) for pid in children), timeout=30)
        again = QuiverUp(tmp_path / "cluster", up.port).start()
        children = children_of(again.process.pid)  # type: ignore[union-attr]
        await assert_eventually_async(lambda: same_answers(again.router, answers), timeout=30, interval=0.5)
        again.signal(signal.SIGINT)
        assert_eventually(lambda: not any(alive(pid) for pid in children), timeout=30)
    finally:
        for running in (up, locals().get("again")):
            if running is not None and running.process is not None and running.process.poll() is None:
                running.process.kill()
        up.kill_all_left(children)


async def test_killing_quiver_up_outright_stops_every_process_it_started(tmp_path):
    up = QuiverUp(tmp_path / "cluster", free_port()).start()
    children = children_of(up.process.pid)  # type: ignore[union-attr]
    assert len(children) == 5  # etcd, three shard servers, the router
    try:
        up.signal(signal.SIGKILL)
        assert_eventually(lambda: not any(alive(pid) for pid in children), timeout=30)
    finally:
        up.kill_all_left(children)


def test_a_shard_server_refuses_a_server_id_other_than_its_data_directory_holds(tmp_path):
    data_dir = tmp_path / "shard"
    first = ServerProcess(["-m", "shard", "--data-dir", str(data_dir), "--server-id", "alpha"], tmp_path / "shard.log")
    try:
        first.start()
    finally:
        first.stop()
    assert (data_dir / "server_id").read_text().strip() == "alpha"
    second = subprocess.run(
        [sys.executable, "-m", "shard", "--data-dir", str(data_dir), "--server-id", "beta"],
        capture_output=True, text=True, timeout=60,
    )
    assert second.returncode == 2
    assert "belongs to server id 'alpha', not 'beta'" in second.stderr


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(tmp_path / "cluster", shards=3) as running:
        yield running


async def test_a_shard_server_restarted_on_a_new_port_serves_its_replicas_again(cluster):
    data = glove_subset()
    async with AsyncClient(cluster.router_address, timeout=30) as client:
        await client.create_collection("docs", 50, index="flat", shards=3)
        await client.upsert("docs", [f"w{i}" for i in range(N)], data.base[:N])
        before = [r.ids for r in await client.search("docs", data.queries[:10], 10)]
        old = cluster.shard_servers[0]
        old.stop()
        cluster.shard_servers[0] = cluster.shard_server(0).start()  # same data directory, a new free port
        assert cluster.shard_servers[0].address != old.address

        async def full_answers() -> None:
            results = await client.search("docs", data.queries[:10], 10)
            assert [r.ids for r in results] == before and not any(r.partial for r in results)

        await assert_eventually_async(full_answers, timeout=20, interval=0.2)
        status = await client.status()
        moved = [r for r in status.replicas if r.server_id == "shard-0"]
        assert moved and all(r.address == cluster.shard_servers[0].address for r in moved)
        assert np.sum([r.point_count for r in status.replicas]) == N
