"""The coalescer: an idle key runs at once; concurrent submissions share later batches; results and
errors reach the right callers."""
from __future__ import annotations

import asyncio

import pytest

from router.coalescer import Coalescer


class HeldBatches:
    """A run_batch that records each batch (key, jobs) and holds it until `release` is set."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()

    async def __call__(self, key, jobs):  # type: ignore[no-untyped-def]
        self.seen.append((key, list(jobs)))
        await self.release.wait()
        return list(jobs)

    @property
    def batches(self) -> list[list[int]]:
        return [jobs for _, jobs in self.seen]


async def test_concurrent_jobs_share_batches_and_get_their_own_results():
    batches: list[list[int]] = []

    async def run(key, jobs):
        batches.append(list(jobs))
        await asyncio.sleep(0.01)
        return [job * 10 for job in jobs]

    coalescer: Coalescer[int] = Coalescer(run, max_batch=4)
    results = await asyncio.gather(*(coalescer.submit("k", j) for j in range(10)))
    assert results == [j * 10 for j in range(10)]
    assert batches[0] == [0]  # the first job did not wait
    assert len(batches) < 10 and all(len(b) <= 4 for b in batches)
    assert sorted(j for b in batches for j in b) == list(range(10))


async def test_different_keys_do_not_wait_for_each_other():
    started: list[str] = []
    release = asyncio.Event()

    async def run(key, jobs):
        started.append(key)
        if key == "slow":
            await release.wait()
        return list(jobs)

    coalescer: Coalescer[int] = Coalescer(run)
    slow = asyncio.create_task(coalescer.submit("slow", 1))
    await asyncio.sleep(0)
    assert await coalescer.submit("fast", 2) == 2
    release.set()
    assert await slow == 1


async def test_a_failed_batch_fails_each_member_and_the_key_recovers():
    calls = 0

    async def run(key, jobs):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise RuntimeError("shard down")
        return list(jobs)

    coalescer: Coalescer[int] = Coalescer(run)
    outcomes = await asyncio.gather(*(coalescer.submit("k", j) for j in range(4)), return_exceptions=True)
    assert outcomes[0] == 0
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:])
    assert await coalescer.submit("k", 9) == 9


async def test_a_batch_holds_only_as_many_jobs_as_fits_allows_and_a_lone_job_always_goes():
    run = HeldBatches()

    coalescer: Coalescer[int] = Coalescer(run, fits=lambda jobs: sum(jobs) <= 5)
    leader = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalescer.submit("k", j)) for j in (2, 3, 1, 9, 4)]
    await asyncio.sleep(0)
    assert coalescer.queued == 5
    run.release.set()
    assert await asyncio.gather(leader, *waiting) == [0, 2, 3, 1, 9, 4]
    assert run.batches == [[0], [2, 3], [1], [9], [4]]


async def test_a_job_whose_caller_gave_up_while_queued_is_never_sent():
    run = HeldBatches()

    coalescer: Coalescer[int] = Coalescer(run)
    leader = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit("k", 1))
    kept = asyncio.create_task(coalescer.submit("k", 2))
    await asyncio.sleep(0)
    gone.cancel()
    run.release.set()
    assert await leader == 0 and await kept == 2
    assert run.batches == [[0], [2]]


async def test_a_job_expired_while_queued_fails_with_its_reason_and_never_takes_a_place_in_a_batch():
    run = HeldBatches()

    def expired(job: int) -> BaseException | None:
        return TimeoutError(f"job {job} is too late") if job % 2 else None

    coalescer: Coalescer[int] = Coalescer(run, fits=lambda jobs: len(jobs) <= 2, expired=expired)
    leader = asyncio.create_task(coalescer.submit("k", 1))  # an idle key sends at once: never checked
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalescer.submit("k", j)) for j in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()
    outcomes = await asyncio.gather(leader, *waiting, return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[1] == 2 and outcomes[3] == 4
    assert isinstance(outcomes[2], TimeoutError) and "job 3 is too late" in str(outcomes[2])
    assert run.batches == [[1], [2, 4]]  # 3 neither went out nor kept 4 from joining 2


async def test_an_exception_as_one_result_fails_that_member_alone():
    async def run(key, jobs):
        await asyncio.sleep(0.01)
        return [ValueError(f"bad {j}") if j == 2 else j for j in jobs]

    coalescer: Coalescer[int] = Coalescer(run)
    outcomes = await asyncio.gather(*(coalescer.submit("k", j) for j in range(4)), return_exceptions=True)
    assert outcomes[:2] == [0, 1] and outcomes[3] == 3
    assert isinstance(outcomes[2], ValueError)
    with pytest.raises(ValueError, match="bad 2"):
        await coalescer.submit("k", 2)  # the leader's own result is unwrapped the same way


async def test_each_batch_is_run_under_its_own_key():
    run = HeldBatches()

    coalescer: Coalescer[int] = Coalescer(run)
    first = [asyncio.create_task(coalescer.submit(key, 0)) for key in ("a", "b")]
    await asyncio.sleep(0)
    queued = [asyncio.create_task(coalescer.submit(key, n)) for key in ("a", "b") for n in (1, 2)]
    await asyncio.sleep(0)
    run.release.set()
    await asyncio.gather(*first, *queued)
    assert sorted(run.seen) == [("a", [0]), ("a", [1, 2]), ("b", [0]), ("b", [1, 2])]


async def test_a_caller_leaving_while_its_batch_runs_does_not_keep_answers_from_the_others():
    gates = [asyncio.Event(), asyncio.Event()]  # one per batch: the leader's, then the members'
    started: list[list[int]] = []

    async def run(key, jobs):
        started.append(list(jobs))
        await gates[len(started) - 1].wait()
        return [job * 10 for job in jobs]

    coalescer: Coalescer[int] = Coalescer(run)
    leader = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    members = [asyncio.create_task(coalescer.submit("k", n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    gates[0].set()
    assert await leader == 0
    while len(started) < 2:
        await asyncio.sleep(0)
    members[0].cancel()  # gone while its batch is in flight
    await asyncio.sleep(0)
    gates[1].set()
    assert await asyncio.gather(*members[1:]) == [20, 30]


async def test_by_default_a_batch_holds_at_most_64_jobs():
    run = HeldBatches()

    coalescer: Coalescer[int] = Coalescer(run)
    tasks = [asyncio.create_task(coalescer.submit("k", n)) for n in range(101)]
    await asyncio.sleep(0)
    run.release.set()
    assert await asyncio.gather(*tasks) == list(range(101))
    assert [len(b) for b in run.batches] == [1, 64, 36]
