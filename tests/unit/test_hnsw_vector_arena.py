"""HNSW keeps its raw vectors in an arena beside the graph: exact reads and scores come from it, it is in
the snapshot, and a snapshot from before the arena (deleted labels included) rebuilds it from the graph.
A forced post-filtered search asking for more results than the candidate cap still answers in full."""
from __future__ import annotations

import numpy as np
import pytest

from quiver.filters import Range
from quiver.specs import PartitionKey, PartitionSpec
from shard.indexes import IndexConfig, QueryKnobs
from shard.indexes.blob_container import pack, unpack
from shard.indexes.hnsw import HnswIndex
from shard.partition_state import PartitionState, SearchPolicy

DIM = 8


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_snapshot_from_before_the_arena_with_deleted_labels_loads_and_reads_the_same_vectors():
    vectors = unit(np.random.default_rng(0), 50)
    config = IndexConfig("hnsw", DIM, "ip", {})
    index = HnswIndex(config)
    index.add(np.arange(50, dtype=np.int64), vectors)
    index.remove(np.array([3, 17], dtype=np.int64))
    header, blobs = unpack(index.to_bytes())
    assert "vectors" in blobs
    old = pack(header, {"hnswlib": blobs["hnswlib"]})  # what a server before the arena wrote
    for data in (index.to_bytes(), old):
        loaded = HnswIndex.from_bytes(config, data)
        live = np.array([i for i in range(50) if i not in (3, 17)], dtype=np.int64)
        np.testing.assert_allclose(loaded.vectors(live), vectors[live], atol=1e-6)
        hits = loaded.search_subset(vectors[:2], 3, live)
        assert hits.labels[0, 0] == 0 and hits.labels[1, 0] == 1


def test_a_forced_post_filter_asking_for_more_than_the_cap_still_returns_every_match_it_should():
    n = 6000
    state = PartitionState(PartitionSpec(PartitionKey("p", 0, 1), DIM, "cosine", "hnsw", {"ef_search": 32}))
    vectors = unit(np.random.default_rng(1), n)
    state.upsert([str(i) for i in range(n)], vectors, [{"r": i} for i in range(n)])
    [result] = state.search(vectors[:1], 5000, Range("r", lt=5500), QueryKnobs(), False, SearchPolicy(force_filtered="ann_post_filtered"))
    assert len(result.ids) == 5000 and all(int(i) < 5500 for i in result.ids)


def test_a_no_wait_search_refuses_to_wait_for_searches_at_another_ef_and_a_waiting_one_gets_its_turn():
    import threading

    from shard.indexes.base import WouldWait

    vectors = unit(np.random.default_rng(2), 200)
    index = HnswIndex(IndexConfig("hnsw", DIM, "ip", {"ef_search": 32}))
    index.add(np.arange(200, dtype=np.int64), vectors)
    gate = index._gate
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        gate.enter(32)
        try:
            entered.set()
            release.wait(5)
        finally:
            gate.leave()

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        with pytest.raises(WouldWait):
            index.search(vectors[:1], 5, QueryKnobs(ef_search=64, no_wait=True), None)
        # The same ef as the one running never waits.
        assert index.search(vectors[:1], 5, QueryKnobs(ef_search=32, no_wait=True), None).labels[0, 0] == 0
    finally:
        release.set()
        holder.join(5)
    assert index.search(vectors[:1], 5, QueryKnobs(ef_search=64, no_wait=True), None).labels[0, 0] == 0
