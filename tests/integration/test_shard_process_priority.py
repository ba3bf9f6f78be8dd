"""`quiver-shard --nice N` lowers the whole server's CPU priority, event loop included, so a router sharing
its cores answers (and refuses) first; its worker threads still go lower by their own increments.
`--worker-policy idle` puts the worker threads (searches, commits) under SCHED_IDLE, the event loop not."""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np

from quiver.local_cluster import ServerProcess
from quiver.specs import PartitionKey, PartitionSpec
from quiver.v1 import shard_pb2, shard_pb2_grpc
from quiver.wire.specs import partition_spec_to_proto


def _thread_nice_values(pid: int) -> dict[str, int]:
    """Each thread's nice value by its name, read from /proc (field 19 of stat, after the command name)."""
    values: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        values[f"{name}:{tid}"] = int(fields[16])
    return values


def test_nice_flag_lowers_every_thread_of_the_shard_server(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", "0", "--nice", "4", "--commit-nice", "3"],
                           tmp_path / "shard.log").start()
    try:
        assert server.process is not None
        values = _thread_nice_values(server.process.pid)
        assert len(values) > 1, values
        expected = min(19, base + 4)
        assert all(nice >= expected for nice in values.values()), values
        main_thread = [nice for name, nice in values.items() if name.endswith(f":{server.process.pid}")]
        assert main_thread == [expected]  # the event loop's thread: the flag's increment, no more
    finally:
        server.stop()


def _thread_policies(pid: int) -> dict[int, int]:
    policies: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies[int(tid)] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
    return policies


def _search_and_write(address: str) -> None:
    """Runs a write and a search, so the commit thread and a search thread exist (pools start them lazily)."""
    spec = PartitionSpec(PartitionKey("docs", 0, 1), dim=4, metric="cosine", index_kind="flat")
    ref = shard_pb2.PartitionRef(collection="docs", shard=0, version=1)
    with grpc.insecure_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=partition_spec_to_proto(spec)), timeout=10)
        stub.Upsert(shard_pb2.UpsertRequest(ref=ref, ids=["a", "b"], vectors=np.eye(2, 4, dtype="<f4").tobytes()), timeout=10)
        reply = stub.Search(shard_pb2.SearchRequest(ref=ref, queries=np.ones(4, "<f4").tobytes(), k=2), timeout=10)
        assert sorted(reply.results[0].ids) == ["a", "b"]


def test_idle_worker_policy_runs_searches_and_commits_under_sched_idle_and_the_event_loop_normally(tmp_path: Path) -> None:
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", "0", "--worker-policy", "idle"],
                           tmp_path / "shard.log").start()
    try:
        assert server.process is not None
        _search_and_write(server.address)
        policies = _thread_policies(server.process.pid)
        assert policies[server.process.pid] == os.SCHED_OTHER, policies  # the event loop's thread
        idle = [tid for tid, policy in policies.items() if policy == os.SCHED_IDLE]
        assert len(idle) >= 2, policies  # at least the partition's commit thread and one search thread
    finally:
        server.stop()


def test_by_default_no_thread_of_the_shard_server_runs_under_sched_idle(tmp_path: Path) -> None:
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", "0"], tmp_path / "shard.log").start()
    try:
        assert server.process is not None
        _search_and_write(server.address)
        assert os.SCHED_IDLE not in _thread_policies(server.process.pid).values()
    finally:
        server.stop()
