"""IVF-PQ trains in the background: writes keep landing meanwhile, and the trained index holds exactly them."""
from __future__ import annotations

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
