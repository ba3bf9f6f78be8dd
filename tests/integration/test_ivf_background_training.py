"""IVF-PQ trains in the background: writes keep landing meanwhile, and the trained index holds exactly them."""
from __future__ import annotations

import asyncio

import numpy as np

from quiver.specs import PartitionKey, PartitionSpec
from shard.durable_partition import DurabilityPolicy, DurablePartition
from shard.indexes import QueryKnobs
from shard.partition_state import SearchPolicy
from tests.data_fixtures import glove_subset
from tests.eventually import assert_eventually_async

SPEC = PartitionSpec(PartitionKey("docs", 0, 1), 50, "cosine", "ivf_pq", {"nlist": 32, "m": 25, "train_size": 3000, "refine": 8})


def normed(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


async def test_writes_made_while_training_runs_are_in_the_trained_index(tmp_path):
    base = normed(glove_subset().base[:6000])
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    try:
        await partition.upsert([f"p{i}" for i in range(3000)], base[:3000], None)  # reaches train_size
        for start in range(3000, 6000, 250):  # keeps writing while k-means runs
            await partition.upsert([f"p{i}" for i in range(start, start + 250)], base[start : start + 250], None)
        await partition.delete([f"p{i}" for i in range(0, 6000, 10)], None)
        await partition.upsert(["p1"], base[5999:6000], None)  # replace a vector
        await assert_eventually_async(lambda: partition.state.index.trained, timeout=120)

        live = [i for i in range(6000) if i % 10]
        assert partition.state.count == len(live)
        probe = [i for i in live[::37] if i != 1] + [5999]
        results = await partition.search(base[probe], 2, None, QueryKnobs(nprobe=32), False, False, False)
        assert all(r.strategy == "ann" for r in results)
        misses = [row for row, r in zip(probe, results) if row != 5999 and r.ids[0] != f"p{row}"]
        assert len(misses) <= 0.02 * len(probe), misses
        assert set(results[-1].ids) == {"p1", "p5999"}  # the replaced vector is indexed under its new id
        deleted = list(range(10, 6000, 10))
        found = await partition.search(base[deleted], 1, None, QueryKnobs(nprobe=32), False, False, False)
        assert not any(r.ids[0] == f"p{i}" for i, r in zip(deleted, found))
        assert partition.last_snapshot_unix > 0  # the trained state was made durable
    finally:
        await partition.close()

    recovered = DurablePartition.open(tmp_path, DurabilityPolicy(), SearchPolicy())
    assert recovered.state.index.trained and recovered.state.count == len(live)


async def test_ivf_lists_are_compacted_once_writes_go_quiet_and_answer_as_before(tmp_path):
    spec = PartitionSpec(PartitionKey("docs", 0, 1), 50, "cosine", "ivf_pq", {"nlist": 32, "m": 25, "train_size": 3000})
    base = normed(glove_subset().base[:5000])
    partition = DurablePartition.create(tmp_path, spec, DurabilityPolicy(compact_lists_after_idle_s=2.0), SearchPolicy())
    partition.start()
    try:
        await partition.upsert([f"p{i}" for i in range(3000)], base[:3000], None)
        await assert_eventually_async(lambda: partition.state.index.trained, timeout=120)
        assert partition.list_compactions == 0  # training sized its own lists; nothing written since
        await partition.upsert([f"p{i}" for i in range(3000, 5000)], base[3000:5000], None)
        await partition.delete([f"p{i}" for i in range(0, 5000, 9)], None)
        lists_before = partition.state.index._lists.ivf.invlists.this
        probe = base[::50]
        before = await partition.search(probe, 10, None, QueryKnobs(nprobe=8), False, False, False)
        assert partition.list_compactions == 0 and (await partition.stats())["list_compaction_due"]  # still quiet-waiting

        await assert_eventually_async(lambda: partition.list_compactions == 1, timeout=30)
        assert partition.state.index._lists.ivf.invlists.this != lists_before
        after = await partition.search(probe, 10, None, QueryKnobs(nprobe=8), False, False, False)
        assert [r.ids for r in after] == [r.ids for r in before]
        assert all(np.array_equal(a.scores, b.scores) for a, b in zip(after, before))
        stats = await partition.stats()
        assert stats["list_compactions"] == 1 and not stats["list_compaction_due"]
        await asyncio.sleep(2.5)
        assert partition.list_compactions == 1  # nothing written since: no second copy

        await partition.upsert(["p1"], base[4999:5000], None)  # under 1% of the index changed: not worth a copy
        await asyncio.sleep(2.5)
        assert partition.list_compactions == 1
        found = await partition.search(base[4999:5000], 2, None, QueryKnobs(nprobe=32), False, False, False)
        assert set(found[0].ids) == {"p1", "p4999"}
    finally:
        await partition.close()
