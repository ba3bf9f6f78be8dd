"""The shard server's thread pools, one per role, so one kind of work can never starve another.

hnswlib and faiss release the GIL, so searches and index builds scale with threads; but if they shared one
pool (asyncio's default, as they once did) a burst of slow exact searches would queue every commit batch
behind them, and an IVF-PQ training would hold threads that searches need. So:
- searches (and gets and stats, which read the same state) share a pool sized to the cores;
- each partition's commit loop has one thread of its own (`commit_thread`): its work is serial anyway, and
  a write waits only for its own partition's earlier writes, never for a search;
- index builds (IVF-PQ k-means) get a small pool, so training never takes every core from searches;
- stats (what status pages and operators ask for) get two threads, so a saturated server still says how
  it is;
- the etcd client has its own threads (quiver.control_plane.etcd_client), lease renewals a dedicated one.

On a saturated machine the pools still compete for the cores, so commit threads run at a lower scheduling
priority (nice +COMMIT_NICE, `--commit-nice`) and index builds lower still: under overload the CPU goes to
searches first, while writes still progress (CFS gives a niced thread a smaller share, never none). A
commit thread niced far below the searches can be preempted while it holds the index lock or the GIL, and
every search of its partition then waits for it; where that shows (quiver_shard_search_lock_wait_seconds),
`--commit-nice 0` with `--commit-yield-ratio` (shard.durable_partition) bounds the writes' share instead.
Where other servers or clients share the cores, `--worker-policy idle` (SCHED_IDLE) goes further: index work
then runs only on cores no event loop wants.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)

COMMIT_NICE = 5
INDEX_BUILD_NICE = 10


def _lower_thread_priority(tid: int, increment: int) -> None:
    # Linux schedules threads as tasks: PRIO_PROCESS with a thread id sets that thread's nice value.
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (OSError, AttributeError) as error:  # the thread ended meanwhile, or this is not Linux
        _log.debug("could not lower thread %s's priority: %s", tid, error)


WORKER_POLICIES = ("normal", "idle")


def _niced(increment: int, policy: str = "normal") -> Callable[[], None]:
    def lower_this_threads_priority() -> None:
        if increment > 0:
            _lower_thread_priority(threading.get_native_id(), increment)
        if policy == "idle":
            # SCHED_IDLE: the thread runs only on a core no normal thread wants, and a normal thread that wakes
            # (an event loop with a request to refuse) takes the core from it at once. Under EEVDF a niced
            # thread is preempted only when the woken one's deadline comes first, which at nice +16 still left
            # refusals waiting ~10 ms at p99 behind index work. Needs no privilege.
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except (OSError, AttributeError) as error:  # not Linux
                _log.warning("could not set SCHED_IDLE on worker thread: %s", error)

    return lower_this_threads_priority


def lower_process_priority(increment: int) -> None:
    """Add `increment` to the nice value of every thread of this process, those already started by imports
    (gRPC's, say) included; threads started later inherit it from the thread that starts them."""
    if increment > 0:
        for tid in os.listdir("/proc/self/task"):
            _lower_thread_priority(int(tid), increment)


@dataclass(frozen=True)
class ExecutorSizes:
    searches: int = 0  # 0: one thread per core
    index_builds: int = 1
    # Added to every worker thread's nice value (searches, commits, index builds), never to the event loop's.
    # Where a router or clients share this machine's cores (a node, a local cluster), a positive value keeps
    # their event loops, and this server's own, first in line for a CPU under a saturating load: admission
    # refusals stay prompt instead of waiting behind index work for a scheduler slice.
    worker_nice: int = 0
    # Added on top for each partition's commit thread: how far writes' index work yields to searches when
    # both want the cores (CFS weights: +5 gives a commit thread about a third of a search thread's share,
    # +16 about a thirtieth, so writes then use what searches leave idle).
    commit_nice: int = COMMIT_NICE
    # "idle": every worker thread (searches, commits, index builds) runs under SCHED_IDLE, below every normal
    # thread of the machine, so an event loop anywhere on these cores is never kept waiting by index work;
    # among themselves the workers then share equally (the nice values above no longer order them: bound
    # the writes' share with the commit yield ratio instead). For co-located routers, clients or a node.
    worker_policy: str = "normal"

    def __post_init__(self) -> None:
        if self.worker_policy not in WORKER_POLICIES:
            raise ValueError(f"worker_policy {self.worker_policy!r}: expected one of {', '.join(WORKER_POLICIES)}")

    def resolved_searches(self) -> int:
        return self.searches or max(1, os.cpu_count() or 1)


class ShardExecutors:
    def __init__(self, sizes: ExecutorSizes = ExecutorSizes()) -> None:
        self.sizes = sizes
        self._worker_nice = max(0, sizes.worker_nice)
        self._commit_nice = self._worker_nice + max(0, sizes.commit_nice)
        policy = sizes.worker_policy
        self.searches = ThreadPoolExecutor(sizes.resolved_searches(), thread_name_prefix="search", initializer=_niced(self._worker_nice, policy))
        self.index_builds = ThreadPoolExecutor(
            max(1, sizes.index_builds), thread_name_prefix="index-build", initializer=_niced(self._worker_nice + INDEX_BUILD_NICE, policy)
        )
        self.stats = ThreadPoolExecutor(2, thread_name_prefix="stats")

    def commit_thread(self, name: str) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(1, thread_name_prefix=f"commit-{name}", initializer=_niced(self._commit_nice, self.sizes.worker_policy))

    def shutdown(self) -> None:
        self.searches.shutdown(wait=False, cancel_futures=True)
        self.index_builds.shutdown(wait=False, cancel_futures=True)
        self.stats.shutdown(wait=False, cancel_futures=True)


async def run_in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) in `pool`. If the awaiting task is cancelled (the caller went away) before a thread
    took the job, the job is dropped, never run."""
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))


_default: ShardExecutors | None = None


def default_executors() -> ShardExecutors:
    """Pools for partitions made without a server (tests, tools): shared by all of them in this process."""
    global _default
    if _default is None:
        _default = ShardExecutors()
    return _default
