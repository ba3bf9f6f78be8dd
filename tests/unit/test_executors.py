"""Under a saturated CPU, searches get the cores first: commit threads and index builds run niced."""
from __future__ import annotations

import functools
import os
import threading

import pytest

from shard.executors import COMMIT_NICE, INDEX_BUILD_NICE, ExecutorSizes, ShardExecutors


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_commit_and_index_build_threads_run_at_a_lower_priority_than_searches() -> None:
    base = _nice_of_this_thread()
    executors = ShardExecutors()
    commit = executors.commit_thread("docs/shard-0/v1")
    try:
        assert executors.searches.submit(_nice_of_this_thread).result() == base
        assert commit.submit(_nice_of_this_thread).result() == min(19, base + COMMIT_NICE)
        assert executors.index_builds.submit(_nice_of_this_thread).result() == min(19, base + INDEX_BUILD_NICE)
    finally:
        commit.shutdown()
        executors.shutdown()


def test_worker_nice_lowers_every_worker_thread_but_keeps_their_order() -> None:
    base = _nice_of_this_thread()
    executors = ShardExecutors(ExecutorSizes(worker_nice=3))
    commit = executors.commit_thread("docs/shard-0/v1")
    try:
        assert _nice_of_this_thread() == base  # the caller's thread (the event loop's) is left as it was
        assert executors.searches.submit(_nice_of_this_thread).result() == min(19, base + 3)
        assert commit.submit(_nice_of_this_thread).result() == min(19, base + 3 + COMMIT_NICE)
        assert executors.index_builds.submit(_nice_of_this_thread).result() == min(19, base + 3 + INDEX_BUILD_NICE)
    finally:
        commit.shutdown()
        executors.shutdown()


def test_commit_nice_sets_how_far_commit_threads_yield_to_searches() -> None:
    base = _nice_of_this_thread()
    executors = ShardExecutors(ExecutorSizes(worker_nice=2, commit_nice=11))
    commit = executors.commit_thread("docs/shard-0/v1")
    try:
        assert executors.searches.submit(_nice_of_this_thread).result() == min(19, base + 2)
        assert commit.submit(_nice_of_this_thread).result() == min(19, base + 2 + 11)
    finally:
        commit.shutdown()
        executors.shutdown()


def test_idle_policy_runs_every_worker_thread_under_sched_idle_but_not_the_caller_or_stats() -> None:
    executors = ShardExecutors(ExecutorSizes(worker_policy="idle"))
    commit = executors.commit_thread("docs/shard-0/v1")
    try:
        policy_here = functools.partial(os.sched_getscheduler, 0)
        assert executors.searches.submit(policy_here).result() == os.SCHED_IDLE
        assert commit.submit(policy_here).result() == os.SCHED_IDLE
        assert executors.index_builds.submit(policy_here).result() == os.SCHED_IDLE
        assert executors.stats.submit(policy_here).result() == os.SCHED_OTHER  # status answers even when saturated
        assert policy_here() == os.SCHED_OTHER  # the caller's thread (the event loop's)
    finally:
        commit.shutdown()
        executors.shutdown()


def test_an_unknown_worker_policy_is_refused_when_configured() -> None:
    with pytest.raises(ValueError, match="worker_policy 'fifo'"):
        ExecutorSizes(worker_policy="fifo")
