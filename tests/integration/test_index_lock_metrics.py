"""How long searches wait for a partition's index lock, and how long commit slices hold it, is measured
(quiver_shard_search_lock_wait_seconds, quiver_shard_write_slice_hold_seconds): the figures an operator
needs to tell searches slowed by writes from searches slowed by the CPU."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from quiver.metrics import SEARCH_LOCK_WAIT_SECONDS, WRITE_SLICE_HOLD_SECONDS
from quiver.specs import PartitionKey, PartitionSpec
from shard.durable_partition import APPLY_SLICE_POINTS, DurabilityPolicy, DurablePartition
from shard.indexes import QueryKnobs
from shard.partition_state import SearchPolicy

SPEC = PartitionSpec(PartitionKey("docs", 0, 1), 8, "cosine", "hnsw", {})


def _count_and_sum(histogram) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    return samples[f"{histogram._name}_count"], samples[f"{histogram._name}_sum"]


async def test_a_search_behind_a_held_write_lock_records_its_wait_and_each_commit_slice_its_hold(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((3 * APPLY_SLICE_POINTS, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(), SearchPolicy())
    partition.start()
    try:
        slices_before, _ = _count_and_sum(WRITE_SLICE_HOLD_SECONDS)
        await partition.upsert([f"p{i}" for i in range(len(vectors))], vectors, None)
        slices_after, _ = _count_and_sum(WRITE_SLICE_HOLD_SECONDS)
        # One upsert of three slices' worth of points is applied in three slices, each observed: searches
        # get the lock between them, not only after the whole upsert.
        assert slices_after - slices_before == 3
        results = await partition.search(vectors, 1, None, QueryKnobs(), False, False, False)
        assert [r.ids[0] for r in results] == [f"p{i}" for i in range(len(vectors))]

        waits_before, waited_before = _count_and_sum(SEARCH_LOCK_WAIT_SECONDS)
        holding = threading.Event()

        def hold_write_lock() -> None:
            with partition._lock.write():
                holding.set()
                time.sleep(0.2)

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        holding.wait()
        # Eight queries: too many to run inline on the loop, so a worker thread waits for the lock.
        results = await partition.search(vectors[:8], 1, None, QueryKnobs(), False, False, False)
        holder.join()
        assert [r.ids[0] for r in results] == [f"p{i}" for i in range(8)]
        waits_after, waited_after = _count_and_sum(SEARCH_LOCK_WAIT_SECONDS)
        assert waits_after - waits_before == 1
        assert waited_after - waited_before >= 0.1
    finally:
        await partition.close()


async def test_with_searches_in_flight_the_commit_thread_rests_in_proportion_to_each_slices_lock_hold(tmp_path):
    ratio = 200.0
    vectors = np.random.default_rng(1).standard_normal((3 * APPLY_SLICE_POINTS, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    partition = DurablePartition.create(tmp_path, SPEC, DurabilityPolicy(commit_yield_ratio=ratio), SearchPolicy())
    partition.start()
    try:
        partition._searches_in_flight += 1  # as a search running on a worker thread counts itself
        _, held_before = _count_and_sum(WRITE_SLICE_HOLD_SECONDS)
        started = time.perf_counter()
        await partition.upsert([f"p{i}" for i in range(len(vectors))], vectors, None)
        elapsed = time.perf_counter() - started
        _, held_after = _count_and_sum(WRITE_SLICE_HOLD_SECONDS)
        partition._searches_in_flight -= 1
        assert elapsed >= ratio * (held_after - held_before) > 0  # rested after each of the three slices
        results = await partition.search(vectors[:4], 1, None, QueryKnobs(), False, False, False)
        assert [r.ids[0] for r in results] == [f"p{i}" for i in range(4)]
        assert partition._searches_in_flight == 0  # the search counted itself while it ran, and no longer
    finally:
        await partition.close()
