"""Recovery from disk: restart, a torn WAL tail, and a corrupted snapshot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from quiver.specs import PartitionKey, PartitionSpec
from shard.durable_partition import DurabilityPolicy, DurablePartition
from shard.indexes import QueryKnobs
from shard.indexes.blob_container import STAGING_PREFIX
from shard.partition_state import SearchPolicy
from tests.data_fixtures import glove_subset

SPEC = PartitionSpec(PartitionKey("docs", 0, 1), dim=50, metric="cosine", index_kind="hnsw")


def prepared(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


async def write_batches(partition: DurablePartition, base: np.ndarray, start: int, stop: int, batch: int = 100) -> None:
    for first in range(start, stop, batch):
        ids = [f"p{i}" for i in range(first, min(first + batch, stop))]
        await partition.upsert(ids, prepared(base[first : first + len(ids)]), [{"n": i} for i in range(first, first + len(ids))])


def reopen(directory: Path) -> DurablePartition:
    return DurablePartition.open(directory, DurabilityPolicy(), SearchPolicy())


async def assert_holds(partition: DurablePartition, base: np.ndarray, count: int) -> None:
    assert partition.state.count == count
    assert set(partition.state.ids) == {f"p{i}" for i in range(count)}
    results = await partition.search(prepared(base[:count:97]), 1, None, QueryKnobs(), True, True, False)
    assert [r.ids[0] for r in results] == [f"p{i}" for i in range(0, count, 97)]
    assert [r.metadata[0]["n"] for r in results] == list(range(0, count, 97))


async def test_restart_replays_the_wal_after_the_last_snapshot(tmp_path):
    base = glove_subset().base
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    await write_batches(partition, base, 0, 500)
    await partition.snapshot()
    await write_batches(partition, base, 500, 800)
    await partition.delete(["p799"], None)
    await partition.upsert(["p799"], prepared(base[799:800]), [{"n": 799}])
    await partition.close(snapshot=False)

    recovered = reopen(tmp_path)
    recovered.start()
    await assert_holds(recovered, base, 800)
    await recovered.close()


async def test_a_torn_wal_tail_is_dropped_and_everything_before_it_recovers(tmp_path):
    base = glove_subset().base
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    await write_batches(partition, base, 0, 600)
    await partition.close(snapshot=False)
    segment = sorted((tmp_path / "wal").glob("wal-*.log"))[-1]
    # A crash in the middle of writing a 7th batch: half a record at the end of the log.
    with open(segment, "rb") as f:
        data = f.read()
    last_record_start = data.rfind(b"U\x64\x00\x00\x00") - 16
    with open(segment, "ab") as f:
        f.write(data[last_record_start : last_record_start + 1000])

    recovered = reopen(tmp_path)
    recovered.start()
    await assert_holds(recovered, base, 600)
    await write_batches(recovered, base, 600, 700)
    await recovered.close(snapshot=False)
    again = reopen(tmp_path)
    await assert_holds(again, base, 700)


async def test_a_corrupted_snapshot_is_never_served_and_the_older_one_plus_wal_recover_everything(tmp_path):
    base = glove_subset().base
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    await write_batches(partition, base, 0, 300)
    await partition.snapshot()
    await write_batches(partition, base, 300, 600)
    await partition.snapshot()
    await write_batches(partition, base, 600, 700)
    await partition.close(snapshot=False)
    newest = sorted((tmp_path / "snapshots").glob("snapshot-*.qsnap"))[-1]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))

    recovered = reopen(tmp_path)
    recovered.start()
    await assert_holds(recovered, base, 700)
    await recovered.close()
    assert newest.with_name(newest.name + ".corrupt").exists()


async def test_scratch_folders_left_by_a_snapshot_cut_short_are_removed_when_the_partition_opens(tmp_path):
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    await partition.upsert(["a"], prepared(np.ones((1, SPEC.dim), dtype=np.float32)), None)
    await partition.close(snapshot=True)
    for name in (STAGING_PREFIX + "k2j4", STAGING_PREFIX + "x9"):  # as a process killed mid-snapshot leaves them
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.bin").write_bytes(b"\0" * 4096)
    (tmp_path / (STAGING_PREFIX + "file")).write_bytes(b"not a folder: not ours to remove")
    recovered = DurablePartition.open(tmp_path, DurabilityPolicy(), SearchPolicy())
    try:
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("quiver-")) == [STAGING_PREFIX + "file"]
        assert set(recovered.state.ids) == {"a"}
    finally:
        await recovered.close(snapshot=False)
