"""Replica choice, failover and hedging for reads, against replicas simulated by coroutines."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from router.replica_reads import HedgePolicy, ReplicaReads


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name)


class Replicas:
    """Each address answers its own name after its delay, or raises its error; `None` delay = frozen."""

    def __init__(self, delays: dict[str, float | None], errors: dict[str, grpc.StatusCode] | None = None) -> None:
        self.delays = delays
        self.errors = errors or {}
        self.asked: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, address: str, budget: float) -> str:
        self.asked.append(address)
        try:
            if address in self.errors:
                raise rpc_error(self.errors[address])
            delay = self.delays[address]
            await asyncio.sleep(3600 if delay is None else delay)
            return address
        except asyncio.CancelledError:
            self.cancelled.append(address)
            raise


async def test_reads_move_to_the_replica_that_answers_faster():
    reads = ReplicaReads(HedgePolicy(hedge_ratio=0))
    replicas = Replicas({"a": 0.03, "b": 0.001})
    answers = [await reads.call(["a", "b"], replicas, 5.0) for _ in range(10)]
    assert answers[0] == "a"  # nothing known yet: placement order
    assert answers[-5:] == ["b"] * 5


async def test_an_unavailable_replica_fails_over_at_once_and_a_caller_error_is_not_retried():
    reads = ReplicaReads()
    replicas = Replicas({"a": 0.0, "b": 0.0}, {"a": grpc.StatusCode.UNAVAILABLE})
    assert await reads.call(["a", "b"], replicas, 5.0) == "b"
    stopping = Replicas({"a": 0.0, "b": 0.0}, {"a": grpc.StatusCode.CANCELLED})  # a server mid-shutdown
    assert await reads.call(["a", "b"], stopping, 5.0) == "b"
    refusing = Replicas({"a": 0.0, "b": 0.0}, {"a": grpc.StatusCode.INVALID_ARGUMENT})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ReplicaReads().call(["a", "b"], refusing, 5.0)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and refusing.asked == ["a"]


async def test_a_frozen_replica_gets_only_its_share_of_the_deadline_and_is_then_avoided():
    reads = ReplicaReads(HedgePolicy(hedge_ratio=0))  # no hedging: the deadline share alone decides
    replicas = Replicas({"a": None, "b": 0.001})
    assert await reads.call(["a", "b"], replicas, 0.4) == "b"
    await asyncio.sleep(0)  # the frozen call is cancelled once b has answered
    assert replicas.cancelled == ["a"]
    for _ in range(20):
        assert await reads.call(["a", "b"], replicas, 0.4) == "b"
    assert replicas.asked.count("a") == 1


async def test_no_replica_and_every_replica_down_are_unavailable_and_all_frozen_is_deadline_exceeded():
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await ReplicaReads().call([], Replicas({}), 1.0)
    assert none.value.code() == grpc.StatusCode.UNAVAILABLE
    down = Replicas({"a": 0.0, "b": 0.0}, {"a": grpc.StatusCode.UNAVAILABLE, "b": grpc.StatusCode.UNAVAILABLE})
    with pytest.raises(grpc.aio.AioRpcError) as unavailable:
        await ReplicaReads().call(["a", "b"], down, 1.0)
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE and down.asked == ["a", "b"]
    frozen = Replicas({"a": None, "b": None})
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await ReplicaReads().call(["a", "b"], frozen, 0.2)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0)  # let the cancellations land
    assert sorted(frozen.cancelled) == ["a", "b"]  # nothing is left running


async def learn(reads: ReplicaReads, replicas: Replicas, address: str, delay: float, times: int) -> None:
    replicas.delays[address] = delay
    for _ in range(times):
        await reads.call([address], replicas, 5.0)


async def test_a_read_slower_than_its_replicas_p95_is_hedged_first_answer_wins_and_the_other_is_cancelled():
    policy = HedgePolicy(min_samples=8, max_tokens=5)
    reads = ReplicaReads(policy)
    replicas = Replicas({"a": 0.001, "b": 0.001})
    await learn(reads, replicas, "a", 0.001, 200)  # a's p95 is known, and hedge tokens are earned
    await learn(reads, replicas, "b", 0.05, 2)  # b has looked slow lately, so a is asked first
    assert reads.hedges == 0
    replicas.delays.update(a=None, b=0.001)  # now a stalls, but its record still says fast
    replicas.asked.clear()
    assert await reads.call(["a", "b"], replicas, 5.0) == "b"
    await asyncio.sleep(0)
    assert replicas.asked == ["a", "b"] and replicas.cancelled == ["a"]
    assert reads.hedges == 1


async def test_hedges_stay_within_their_share_of_all_reads():
    policy = HedgePolicy(hedge_ratio=0.05, min_samples=8, max_tokens=2)
    reads = ReplicaReads(policy)
    replicas = Replicas({"a": 0.0005, "b": 0.0005})
    await learn(reads, replicas, "a", 0.0005, 100)
    replicas.delays["a"] = 0.005  # a turns slow: every read on it now runs past its p95
    for _ in range(150):
        await learn(reads, replicas, "b", 0.01, 1)  # ...while b keeps looking slower, so a stays first
        replicas.delays["b"] = 0.0005
        await reads.call(["a", "b"], replicas, 5.0)
    assert 0 < reads.hedges <= policy.hedge_ratio * reads.reads + policy.max_tokens



async def test_a_coalesced_read_shares_out_the_time_to_its_soonest_callers_deadline():
    reads = ReplicaReads(HedgePolicy(hedge_ratio=0))
    replicas = Replicas({"a": None, "b": 0.001})
    # Callers with deadlines 0.2 s and 4 s share the read: b must be asked in time for the first of them,
    # not at half of the latest deadline.
    assert await asyncio.wait_for(reads.call(["a", "b"], replicas, 4.0, first_due=0.2), 1.0) == "b"


async def test_a_replica_given_up_on_keeps_running_and_its_late_answer_still_counts():
    reads = ReplicaReads(HedgePolicy(hedge_ratio=0))
    replicas = Replicas({"a": 0.15, "b": None})  # a is slow, not frozen; b (asked second) is frozen
    assert await reads.call(["a", "b"], replicas, 0.2) == "a"  # a passed its 0.1 s share, then answered
    assert replicas.asked == ["a", "b"]


async def test_a_replica_that_keeps_losing_hedges_is_asked_less_and_less():
    policy = HedgePolicy(min_samples=8, hedge_ratio=0.5, max_tokens=50)  # hedges always affordable here
    reads = ReplicaReads(policy)
    replicas = Replicas({"a": 0.005, "b": 0.005})
    await learn(reads, replicas, "a", 0.005, 40)  # a's p95 is known
    await learn(reads, replicas, "b", 0.005, 8)
    replicas.delays["a"] = None  # a stalls; b stays fast
    replicas.asked.clear()

    async def reader() -> None:
        for _ in range(50):
            assert await reads.call(["a", "b"], replicas, 5.0) == "b"

    # Concurrent readers keep b busy, which (taken alone) would make a look worth asking again and again:
    # without the penalty for a lost race, a is asked about 90 times in these 400 reads.
    await asyncio.gather(*(reader() for _ in range(8)))
    assert 0 < replicas.asked.count("a") <= 12, replicas.asked.count("a")


async def test_a_single_replica_is_read_under_the_deadline_its_errors_pass_through_and_misses_are_recorded():
    # A group of one replica has no hedge to fall back on: the deadline, errors and misses must still hold.
    reads = ReplicaReads()
    replicas = Replicas({"a": 0.001})
    assert await reads.call(["a"], replicas, 5.0) == "a"
    answered_wait = reads.expected_wait("a")
    assert answered_wait > 0 and reads._of("a").outstanding == 0 and reads._of("a").misses == 0
    replicas.delays["a"] = None  # frozen, and deaf to its budget
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await reads.call(["a"], replicas, 0.05)
    await asyncio.sleep(0.01)  # the abandoned read is cancelled in the background
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and replicas.cancelled == ["a"]
    assert reads._of("a").misses == 1 and reads.expected_wait("a") > answered_wait
    replicas.errors["a"] = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reads.call(["a"], replicas, 5.0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reads._of("a").misses == 2
    del replicas.errors["a"]
    replicas.delays["a"] = 0.5
    caller = asyncio.ensure_future(reads.call(["a"], replicas, 5.0))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert reads._of("a").misses == 2 and reads._of("a").outstanding == 0  # the caller left: not the replica's miss
