"""Coalescing concurrent searches into shared shard requests (dynamic batching).

A routed search costs one gRPC call per shard, and in Python most of a call's cost is fixed, not per
query. So while a batch for some key (collection, k, filter, options) is in flight, searches with the
same key wait, and go out together as one multi-query request per shard when it returns. An idle key
sends at once: a lone client sees no added latency; under concurrency, calls per query drop by up to the
number of waiting clients.

A batch holds at most `max_batch` jobs and only as many as `fits` allows (the shards' per-request query
and message limits), so joining others can never get a request refused that would pass alone. A job
whose caller went away while it waited is dropped before its batch is sent, and so is one that `expired`
names a failure for (say, a search whose deadline can no longer be met): it fails at once, without
taking a place in the batch or costing the shards any work. `run_batch` returns one
result per job; a result that is an exception fails that job alone, and an exception raised by
`run_batch` fails every member.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

Job = TypeVar("Job")


@dataclass
class _Pending(Generic[Job]):
    jobs: list[Job] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


def _unwrap(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


class Coalescer(Generic[Job]):
    def __init__(
        self,
        run_batch: Callable[[Hashable, list[Job]], Awaitable[list[Any]]],
        max_batch: int = 64,
        fits: Callable[[list[Job]], bool] | None = None,
        expired: Callable[[Job], BaseException | None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._fits = fits or (lambda jobs: True)
        self._expired = expired or (lambda job: None)
        self._busy: set[Hashable] = set()
        self._waiting: dict[Hashable, _Pending[Job]] = {}

    @property
    def queued(self) -> int:
        """Jobs waiting for their key's batch in flight to finish."""
        return sum(len(p.jobs) for p in self._waiting.values())

    def backlog(self, key: Hashable) -> tuple[bool, list[Job]]:
        """Whether a batch of `key` is in flight, and the jobs queued behind it."""
        pending = self._waiting.get(key)
        return key in self._busy, list(pending.jobs) if pending is not None else []

    async def submit(self, key: Hashable, job: Job) -> Any:
        if key not in self._busy:
            self._busy.add(key)
            try:
                return _unwrap((await self._run_batch(key, [job]))[0])
            finally:
                self._drain(key)
        pending = self._waiting.setdefault(key, _Pending())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending.jobs.append(job)
        pending.futures.append(future)
        return await future

    def _drain(self, key: Hashable) -> None:
        """The batch for `key` finished: send what queued meanwhile, else mark the key idle."""
        pending = self._waiting.pop(key, None)
        if pending is not None:
            # A cancelled caller's future is done: nobody waits for that search any more.
            live = []
            for job, future in zip(pending.jobs, pending.futures):
                if future.done():
                    continue
                failure = self._expired(job)
                if failure is not None:
                    future.set_exception(failure)
                else:
                    live.append((job, future))
            pending = _Pending([j for j, _ in live], [f for _, f in live])
        if pending is None or not pending.jobs:
            self._busy.discard(key)
            return
        take = 1  # a job alone is always sent; a shard refuses it the same way it would uncoalesced
        while take < min(len(pending.jobs), self.max_batch) and self._fits(pending.jobs[: take + 1]):
            take += 1
        if take < len(pending.jobs):
            self._waiting[key] = _Pending(pending.jobs[take:], pending.futures[take:])
            pending = _Pending(pending.jobs[:take], pending.futures[:take])
        asyncio.get_running_loop().create_task(self._send(key, pending))

    async def _send(self, key: Hashable, pending: _Pending[Job]) -> None:
        try:
            results = await self._run_batch(key, pending.jobs)
        except BaseException as error:  # noqa: BLE001 - every member gets the batch's failure
            for future in pending.futures:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else asyncio.CancelledError())
        else:
            for future, result in zip(pending.futures, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._drain(key)
