"""A GIL-holding call run in a forked child: its effects on files are seen, its failure is an OSError naming
what failed, one that hangs is killed at its timeout, and meanwhile this process's threads keep the GIL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shard.indexes import IndexConfig, QueryKnobs, create_index, load_index
from shard.indexes.forked_call import call_in_child
from tests.eventually import assert_eventually


def test_the_call_runs_in_another_process_and_its_file_is_there_after(tmp_path: Path) -> None:
    out = tmp_path / "pid"
    assert call_in_child(lambda: out.write_text(str(os.getpid())), "writing a pid", timeout_s=30)
    assert int(out.read_text()) != os.getpid()


def test_a_call_that_raises_in_the_child_is_an_os_error_naming_it() -> None:
    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(OSError, match="saving the thing failed in its child process, which exited with 1"):
        call_in_child(fail, "saving the thing", timeout_s=30)


def test_with_grpcs_fork_handlers_on_nothing_is_forked_and_the_caller_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "true")  # as gRPC read it in a process that set it so
    out = tmp_path / "pid"
    assert not call_in_child(lambda: out.write_text(str(os.getpid())), "writing a pid", timeout_s=30)
    assert not out.exists()


def test_a_child_killed_by_a_signal_hands_the_call_back_to_the_caller() -> None:
    assert not call_in_child(lambda: os.kill(os.getpid(), signal.SIGKILL), "crashing", timeout_s=30)


def test_a_child_that_does_not_finish_is_killed_at_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(OSError, match="did not finish within 1 s"):
        call_in_child(lambda: time.sleep(60), "sleeping", timeout_s=1)
    assert time.monotonic() - started < 30


def test_while_an_hnsw_index_is_snapshotted_this_process_runs_python() -> None:
    """hnswlib's save_index holds the GIL for the whole write; the HNSW index runs it in a child, so another
    thread here keeps running Python code: it counts how often it did while the save's child was alive."""
    config = IndexConfig("hnsw", 32, "l2", {"m": 16, "ef_construction": 20, "ef_search": 32})
    index = create_index(config)
    vectors = np.random.default_rng(0).standard_normal((60_000, 32)).astype("f4")
    index.add(np.arange(len(vectors)), vectors)
    children: list[int] = []
    beside_child = 0
    saving = threading.Event()
    done = threading.Event()
    data: list[bytes | memoryview] = []

    def snapshot() -> None:
        saving.set()
        try:
            data.append(index.to_bytes())
        finally:
            done.set()

    earlier = _children_of(os.getpid())  # a session's etcd, say: not the save's
    saver = threading.Thread(target=snapshot)
    saver.start()
    saving.wait()
    while not done.is_set():
        # This process's children as /proc lists them (every kernel has it): the save's child, while it runs.
        if not children:
            children.extend(_children_of(os.getpid()) - earlier)
        elif _alive(children[0]):
            beside_child += 1
    saver.join()
    assert children, "the graph was not saved in a child process"
    assert beside_child > 10  # this thread ran Python code again and again while the child saved
    knobs = QueryKnobs(ef_search=32)
    loaded = load_index(config, bytes(data[0]))
    np.testing.assert_array_equal(loaded.search(vectors[:50], 5, knobs, None).labels, index.search(vectors[:50], 5, knobs, None).labels)


def test_a_child_does_not_outlive_a_server_killed_outright(tmp_path: Path) -> None:
    """SIGKILL of the forking process ends its child too: an orphan would keep the server's listening
    socket, which a restarted server shares by SO_REUSEPORT, and go on writing into its directory."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, time, sys\n"
        "from shard.indexes.forked_call import call_in_child\n"
        f"call_in_child(lambda: (open({str(pid_file)!r}, 'w').write(str(os.getpid())), time.sleep(120)), 'sleeping', 300)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="false"))
    child = 0
    try:
        assert_eventually(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=30)
        child = int(pid_file.read_text())
        server.kill()
        server.wait(10)
        assert_eventually(lambda: not _alive(child), timeout=10)
    finally:
        server.kill()
        server.wait(10)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)  # the test's own leftover, had the behaviour failed


def _children_of(parent: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while it was read
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait (init's, once orphaned) is missing
