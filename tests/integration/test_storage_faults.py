"""Storage faults stop a partition's writes, never its reads, and it takes writes again by itself.

On the simulated disk (tests/simulated_disk.py): a volume short of space refuses a write before anything
is logged (RESOURCE_EXHAUSTED naming the server and path, with a retry hint) and takes the next write once
space is freed; an I/O error while logging makes the partition read-only (reported in stats, named in
every refusal) until its log recovers, and nothing acknowledged before or after is lost in a power cut.
The same on a real small file system: tests/e2e/test_disk_full.py.
"""
from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from quiver.errors import ResourceExhausted, Unavailable
from quiver.specs import PartitionKey, PartitionSpec
from shard.durable_partition import DurabilityPolicy, DurablePartition
from shard.indexes import QueryKnobs
from shard.partition_state import SearchPolicy
from tests.eventually import assert_eventually_async
from tests.simulated_disk import SimulatedDisk

DIM = 4
DIRECTORY = Path("/data/partitions/docs/shard-00000/v000001")
SPEC = PartitionSpec(PartitionKey("docs", 0, 1), dim=DIM, metric="l2", index_kind="flat")
MIN_FREE = 4096


def vectors(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start * DIM, (start + n) * DIM, dtype=np.float32).reshape(n, DIM)


async def started(disk: SimulatedDisk, **policy: float) -> DurablePartition:
    options = {"min_free_bytes": MIN_FREE, "fault_retry_s": 0.05, **policy}
    partition = DurablePartition.create(DIRECTORY, SPEC, DurabilityPolicy(**options), SearchPolicy(), storage=disk, server_id="shard-a")  # type: ignore[arg-type]
    partition.start()
    return partition


async def ids_found(partition: DurablePartition, ids: list[str]) -> set[str]:
    return {i for i, _, _ in await partition.get(ids, False)}


async def test_a_volume_short_of_space_refuses_writes_before_logging_and_takes_them_once_space_is_freed() -> None:
    disk = SimulatedDisk()
    partition = await started(disk)
    await partition.upsert(["a", "b"], vectors(2), None)
    disk.capacity = sum(disk.files().values()) + MIN_FREE + 100  # room for less than a write plus the reserve
    wal_bytes, lsn = partition._wal.size_bytes, partition._wal.last_lsn

    with pytest.raises(ResourceExhausted) as refused:
        await partition.upsert(["c"], vectors(1, 2), None)
    message = str(refused.value)
    assert "shard server shard-a" in message and str(DIRECTORY / "wal") in message and "not applied" in message
    assert refused.value.retry_after_s == pytest.approx(0.05)
    assert (partition._wal.size_bytes, partition._wal.last_lsn) == (wal_bytes, lsn)  # nothing was appended
    stats = await partition.stats()
    assert stats["write_state"] == "disk_full" and str(DIRECTORY / "wal") in stats["write_fault"]
    # Reads go on: search and get still see what was written before.
    results = await partition.search(vectors(1), 2, None, QueryKnobs(), False, False, False)
    assert set(results[0].ids) == {"a", "b"}
    assert await ids_found(partition, ["a", "b", "c"]) == {"a", "b"}

    disk.capacity = None  # the operator freed space: no restart, no call, the next write goes through
    assert await partition.upsert(["c"], vectors(1, 2), None) == lsn + 1
    assert (await partition.stats())["write_state"] == "ok"
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, DurabilityPolicy(), SearchPolicy(), storage=disk.power_loss())
    assert set(recovered.state.ids) == {"a", "b", "c"}


async def test_a_volume_that_fills_up_during_a_write_makes_the_partition_read_only_until_its_log_recovers() -> None:
    disk = SimulatedDisk()
    partition = await started(disk)
    await partition.upsert(["before"], vectors(1), None)
    # Another process filled the volume between the free-space check and the append.
    disk.fail("write", "/wal/", errno.ENOSPC)
    with pytest.raises(Unavailable, match="outcome of this write is unknown"):
        await partition.upsert(["during"], vectors(1, 1), None)
    assert (await partition.stats())["write_state"] == "read_only"
    with pytest.raises(Unavailable, match="read-only since .*injected ENOSPC"):
        await partition.upsert(["refused"], vectors(1, 2), None)
    assert await ids_found(partition, ["before", "during", "refused"]) == {"before"}

    await assert_eventually_async(lambda: _takes_write(partition, "after"), timeout=5)
    assert (await partition.stats())["write_state"] == "ok"
    await partition.upsert(["later"], vectors(1, 4), None)
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, DurabilityPolicy(), SearchPolicy(), storage=disk.power_loss())
    # The failed write's bytes were cut from the log: acknowledged writes before and after it are there.
    assert set(recovered.state.ids) == {"before", "after", "later"}


async def test_an_io_error_on_the_log_keeps_the_partition_read_only_while_recovery_fails_then_it_recovers() -> None:
    disk = SimulatedDisk()
    partition = await started(disk)
    await partition.upsert(["before"], vectors(1), None)
    disk.fail("fsync", "/wal/", errno.EIO)
    disk.fail("truncate", "/wal/", errno.EIO, times=2)  # the first two recovery attempts fail too
    with pytest.raises(Unavailable, match="outcome of this write is unknown"):
        await partition.upsert(["during"], vectors(1, 1), None)
    for attempt in range(2):
        await _wait_for_retry(partition)
        with pytest.raises(Unavailable) as refused:
            await partition.upsert([f"refused{attempt}"], vectors(1, 2), None)
        assert "read-only" in str(refused.value) and str(DIRECTORY / "wal") in str(refused.value)
        assert "shard server shard-a" in str(refused.value)
    stats = await partition.stats()
    assert stats["write_state"] == "read_only" and "could not recover yet" in stats["write_fault"]
    assert await ids_found(partition, ["before"]) == {"before"}  # reads go on

    await _wait_for_retry(partition)
    await partition.upsert(["after"], vectors(1, 3), None)
    assert (await partition.stats())["write_state"] == "ok"
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, DurabilityPolicy(), SearchPolicy(), storage=disk.power_loss())
    assert set(recovered.state.ids) == {"before", "after"}


async def test_a_failed_segment_roll_is_recovered_and_the_log_stays_in_one_piece() -> None:
    disk = SimulatedDisk()
    partition = await started(disk, wal_segment_bytes=256)
    for n in range(3):
        await partition.upsert([f"p{n}"], vectors(1, n), None)
    disk.fail("fsync_dir", "/wal", errno.EIO)  # the roll's new segment name cannot be made durable
    with pytest.raises(Unavailable):
        for n in range(3, 20):
            await partition.upsert([f"p{n}"], vectors(1, n), None)
    acked = {i for i in partition.state.ids}
    await _wait_for_retry(partition)
    await partition.upsert(["after"], vectors(1, 30), None)
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, DurabilityPolicy(), SearchPolicy(), storage=disk.power_loss())
    assert set(recovered.state.ids) == acked | {"after"}


async def test_a_snapshot_of_a_read_only_partition_is_refused_as_unavailable_not_an_internal_error() -> None:
    disk = SimulatedDisk()
    partition = await started(disk, fault_retry_s=60)
    await partition.upsert(["a"], vectors(1), None)
    disk.fail("fsync", "/wal/", errno.EIO)
    with pytest.raises(Unavailable):
        await partition.upsert(["b"], vectors(1, 1), None)
    with pytest.raises(Unavailable, match="read-only"):
        await partition.snapshot()


async def _takes_write(partition: DurablePartition, point: str) -> bool:
    try:
        await partition.upsert([point], vectors(1, 3), None)
    except Unavailable:
        return False
    return True


async def _wait_for_retry(partition: DurablePartition) -> None:
    import asyncio

    await asyncio.sleep(partition._policy.fault_retry_s * 1.5)


IVF_SPEC = PartitionSpec(PartitionKey("docs", 0, 1), dim=8, metric="l2", index_kind="ivf_pq",
                         index_params={"nlist": 4, "m": 2, "nbits": 4, "train_size": 256})


async def test_failed_ivf_training_backs_off_instead_of_running_again_after_every_write() -> None:
    disk = SimulatedDisk()
    partition = DurablePartition.create(DIRECTORY, IVF_SPEC, DurabilityPolicy(), SearchPolicy(), storage=disk)
    partition.start()
    rng = np.random.default_rng(0)
    index = partition.state.index
    real_start_build, failures_left = index.start_build, [2]

    def start_build_failing_twice(sample):  # type: ignore[no-untyped-def]
        # Stands in for k-means failing (faiss raising, memory running out) on the first two tries.
        if failures_left[0]:
            failures_left[0] -= 1
            raise RuntimeError("k-means failed")
        return real_start_build(sample)

    index.start_build = start_build_failing_twice  # type: ignore[method-assign]
    await partition.upsert([f"p{i}" for i in range(300)], rng.standard_normal((300, 8)).astype(np.float32), None)
    await assert_eventually_async(lambda: partition.training_failures == 1, timeout=30)
    for n in range(10):  # ten commit batches inside the first back-off (1 s): no new attempt
        await partition.upsert([f"q{n}"], rng.standard_normal((1, 8)).astype(np.float32), None)
    assert partition.training_failures == 1

    async def trained_after_a_write() -> bool:
        await partition.upsert(["probe"], rng.standard_normal((1, 8)).astype(np.float32), None)
        return partition.state.index.trained

    await assert_eventually_async(trained_after_a_write, timeout=30, interval=0.2)
    assert partition.training_failures == 2  # it did retry, after each back-off, and then succeeded
    await partition.close()
