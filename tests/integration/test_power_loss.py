"""Power loss at random points under concurrent writers: no acknowledged write lost, none half-applied.

A partition runs on the simulated disk (tests/simulated_disk.py), which drops whatever was not fsynced
when the power goes and tears unsynced appends. Writers upsert batches of fresh ids and delete some of
their own acknowledged ones while snapshots are taken; the power is cut at a random mutating disk
operation. Each writer records what it sent and whether it was acknowledged; the checker, after
recovery from what survived, decides what was lost:
- an acknowledged upsert is there with its exact vector and metadata, unless an acknowledged delete
  removed it;
- an acknowledged delete removed all of its ids;
- a write that was not acknowledged is there entirely or not at all (one WAL record per batch);
- nothing is there that nobody wrote.
"""
from __future__ import annotations

import asyncio
import errno
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from quiver.errors import QuiverError
from quiver.specs import PartitionKey, PartitionSpec
from shard.durable_partition import DurabilityPolicy, DurablePartition
from shard.partition_state import SearchPolicy
from tests.simulated_disk import PowerLost, SimulatedDisk

DIM = 4
DIRECTORY = Path("/data/partitions/docs/shard-00000/v000001")
SPEC = PartitionSpec(PartitionKey("docs", 0, 1), dim=DIM, metric="l2", index_kind="flat")
# Small segments and frequent snapshots so that crashes land in rolls, snapshot writes and WAL trims too.
POLICY = DurabilityPolicy(wal_segment_bytes=2048, snapshot_after_wal_bytes=4096, snapshots_kept=2)
WRITERS = 4
OPS_PER_WRITER = 25
CRASHES = 40


@dataclass
class Write:
    kind: str  # "upsert" | "delete"
    ids: list[str]
    vectors: np.ndarray | None = None
    metadata: list[dict] | None = None
    acked: bool = False


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)


async def writer(partition: DurablePartition, number: int, rng: random.Random, history: History) -> None:
    """Writes until its first failure: after the power is cut every later write fails too."""
    acked_ids: list[str] = []
    for op in range(OPS_PER_WRITER):
        if acked_ids and rng.random() < 0.3:
            ids = rng.sample(acked_ids, rng.randint(1, min(3, len(acked_ids))))
            write = Write("delete", ids)
        else:
            ids = [f"w{number}-{op}-{i}" for i in range(rng.randint(1, 5))]
            vectors = np.array([[rng.uniform(-1, 1) for _ in range(DIM)] for _ in ids], dtype=np.float32)
            write = Write("upsert", ids, vectors, [{"writer": number, "op": op, "i": i} for i in range(len(ids))])
        history.writes.append(write)
        try:
            if write.kind == "upsert":
                await partition.upsert(write.ids, write.vectors, write.metadata)  # type: ignore[arg-type]
            else:
                await partition.delete(write.ids, None)
        except QuiverError:
            return
        write.acked = True
        if write.kind == "upsert":
            acked_ids += write.ids
        else:
            acked_ids = [i for i in acked_ids if i not in write.ids]


async def snapshotter(partition: DurablePartition, rng: random.Random) -> None:
    for _ in range(6):
        await asyncio.sleep(rng.uniform(0, 0.01))
        try:
            await partition.snapshot()
        except (QuiverError, OSError, RuntimeError):  # RuntimeError: the WAL refuses after a failed write
            return


async def run_workload(disk: SimulatedDisk, seed: int) -> History:
    rng = random.Random(seed)
    history = History()
    try:
        partition = DurablePartition.create(DIRECTORY, SPEC, POLICY, SearchPolicy(), storage=disk)
    except PowerLost:
        return history  # the power went while the partition was being created: nothing was written
    partition.start()
    tasks = [writer(partition, n, random.Random(rng.random()), history) for n in range(WRITERS)]
    await asyncio.gather(*tasks, snapshotter(partition, random.Random(rng.random())))
    try:
        await partition.close()
    except OSError:
        pass
    return history


def check(recovered: DurablePartition, history: History) -> None:
    state = recovered.state
    present = {point_id: label for point_id, label in state.ids.items()}
    written = {point_id for w in history.writes for point_id in w.ids}
    assert set(present) <= written, f"points nobody wrote: {sorted(set(present) - written)}"
    deleted_by: dict[str, Write] = {}
    for w in history.writes:
        if w.kind == "delete":
            for point_id in w.ids:
                deleted_by[point_id] = w
    for w in history.writes:
        if w.kind == "upsert":
            here = [i in present for i in w.ids]
            undeleted = [i for i in w.ids if i not in deleted_by]
            if w.acked:
                for point_id in undeleted:
                    assert point_id in present, f"acknowledged upsert of {point_id!r} was lost"
            else:
                assert all(here) or not any(here), f"unacknowledged upsert {w.ids} half applied: {here}"
            assert w.vectors is not None and w.metadata is not None
            for row, point_id in enumerate(w.ids):
                if point_id in present:
                    label = present[point_id]
                    np.testing.assert_array_equal(state.vectors_of(np.array([label]))[0], w.vectors[row])
                    assert state.fields.get(label) == w.metadata[row]
        else:
            gone = [i not in present for i in w.ids]
            if w.acked:
                assert all(gone), f"acknowledged delete of {w.ids} undone: still there {[i for i, g in zip(w.ids, gone) if not g]}"
            else:
                assert all(gone) or not any(gone), f"unacknowledged delete {w.ids} half applied: gone {gone}"


async def count_mutations() -> int:
    disk = SimulatedDisk()
    await run_workload(disk, seed=0)
    return disk.mutations


async def test_power_loss_at_random_points_loses_no_acknowledged_write_and_half_applies_none() -> None:
    total = await count_mutations()
    rng = random.Random(20261202)
    acked_total = 0
    for crash in range(CRASHES):
        disk = SimulatedDisk()
        disk.crash_after(rng.randint(1, total))
        history = await run_workload(disk, seed=crash)
        assert disk.crashed or sum(w.acked for w in history.writes) == len(history.writes)
        acked_total += sum(w.acked for w in history.writes)
        after = disk.power_loss(random.Random(crash))
        if not after.exists(DIRECTORY / "spec.json"):
            # The power went before the partition's creation was durable: it was never acknowledged.
            assert not any(w.acked for w in history.writes)
            continue
        recovered = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=after)
        check(recovered, history)
        # Writes go on after recovery (after the torn tail, not behind it), and a second power cut then
        # loses none of them.
        recovered.start()
        await recovered.upsert(["after-recovery"], np.zeros((1, DIM), dtype=np.float32), None)
        await recovered.close()
        again = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=after.power_loss())
        assert set(again.state.ids) == set(recovered.state.ids)
        assert "after-recovery" in again.state.ids
    assert acked_total > CRASHES * WRITERS  # the crashes were not all at the very start


async def test_without_a_crash_every_write_is_acknowledged_and_survives_a_clean_power_cut() -> None:
    disk = SimulatedDisk()
    history = await run_workload(disk, seed=1)
    assert all(w.acked for w in history.writes)
    assert disk.counts["fsync"] > 0 and disk.counts["rename"] > 0  # snapshots were written
    recovered = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=disk.power_loss())
    check(recovered, history)


async def test_a_failed_wal_fsync_answers_outcome_unknown_and_the_log_takes_no_further_writes() -> None:
    disk = SimulatedDisk()
    partition = DurablePartition.create(DIRECTORY, SPEC, POLICY, SearchPolicy(), storage=disk)
    partition.start()
    vectors = np.ones((1, DIM), dtype=np.float32)
    await partition.upsert(["before"], vectors, None)
    disk.fail("fsync", "/wal/", errno.EIO)
    with pytest.raises(QuiverError, match="outcome of this write is unknown"):
        await partition.upsert(["during"], vectors, None)
    assert "during" not in partition.state.ids  # a write whose fsync failed is never applied
    fsyncs = disk.counts["fsync"]
    # No retried fsync: after a failed one the kernel may have dropped the dirty pages, and a second
    # fsync that succeeds would claim a durability the data does not have.
    with pytest.raises(QuiverError):
        await partition.upsert(["after"], vectors, None)
    assert disk.counts["fsync"] == fsyncs
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=disk.power_loss())
    assert "before" in recovered.state.ids
    assert "after" not in recovered.state.ids


async def test_a_failed_snapshot_leaves_writes_durable_and_the_next_snapshot_succeeds() -> None:
    disk = SimulatedDisk()
    partition = DurablePartition.create(DIRECTORY, SPEC, POLICY, SearchPolicy(), storage=disk)
    partition.start()
    vectors = np.ones((1, DIM), dtype=np.float32)
    await partition.upsert(["a"], vectors, None)
    disk.fail("fsync", "/snapshots/", errno.ENOSPC)
    with pytest.raises(OSError):
        await partition.snapshot()
    assert not any(p.name.endswith(".tmp") for p in disk.files())  # the half-written file is removed
    await partition.upsert(["b"], vectors, None)
    await partition.snapshot()
    await partition.close()
    recovered = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=disk.power_loss())
    assert set(recovered.state.ids) == {"a", "b"}
    assert recovered._wal.last_lsn == 2


async def test_power_lost_between_a_snapshot_rename_and_its_directory_fsync_recovers_from_the_wal() -> None:
    disk = SimulatedDisk()
    partition = DurablePartition.create(DIRECTORY, SPEC, POLICY, SearchPolicy(), storage=disk)
    partition.start()
    for n in range(5):
        await partition.upsert([f"p{n}"], np.full((1, DIM), n, dtype=np.float32), None)
    disk.fail("fsync_dir", "/snapshots", errno.EIO)  # stands in for the power cut at that exact step
    with pytest.raises(OSError):
        await partition.snapshot()
    await partition.close()
    after = disk.power_loss()
    assert not after.list_dir(DIRECTORY / "snapshots")
    recovered = DurablePartition.open(DIRECTORY, POLICY, SearchPolicy(), storage=after)
    assert set(recovered.state.ids) == {f"p{n}" for n in range(5)}


def test_power_lost_is_an_os_error_so_the_shard_treats_it_as_an_io_failure() -> None:
    assert isinstance(PowerLost(), OSError)
