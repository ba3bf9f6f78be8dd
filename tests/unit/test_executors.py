"""Under a saturated CPU, searches get the cores first: commit threads and index builds run niced."""
from __future__ import annotations

import os
import threading

from shard.executors import COMMIT_NICE, INDEX_BUILD_NICE, ShardExecutors


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_commit_and_index_build_threads_run_at_a_lower_priority_than_searches() -> None:
    base = _nice_of_this_thread()
    executors = ShardExecutors()
    commit = ShardExecutors.commit_thread("docs/shard-0/v1")
    try:
        assert executors.searches.submit(_nice_of_this_thread).result() == base
        assert commit.submit(_nice_of_this_thread).result() == min(19, base + COMMIT_NICE)
        assert executors.index_builds.submit(_nice_of_this_thread).result() == min(19, base + INDEX_BUILD_NICE)
    finally:
        commit.shutdown()
        executors.shutdown()
