"""PartitionState's point lookups: each id comes back with its own label and metadata, and an empty
lookup has the partition's shape; a snapshot round trip keeps the index parameters and the live set."""
from __future__ import annotations

import numpy as np

from quiver.specs import PartitionKey, PartitionSpec
from shard.partition_state import PartitionState

SPEC = PartitionSpec(PartitionKey("docs", 0, 1), 4, "l2", "hnsw", {"m": 8, "ef_construction": 32, "ef_search": 48})


def loaded() -> PartitionState:
    state = PartitionState(SPEC)
    vectors = np.arange(40, dtype=np.float32).reshape(10, 4)
    state.upsert([f"p{i}" for i in range(10)], vectors, [{"n": i} for i in range(10)])
    state.delete(["p3"])
    return state


def test_get_returns_each_found_id_with_its_own_label_and_metadata_in_request_order() -> None:
    state = loaded()
    found = state.get(["p7", "p3", "nope", "p0"])
    assert [(i, md) for i, _, md in found] == [("p7", {"n": 7}), ("p0", {"n": 0})]
    assert [label for _, label, _ in found] == [state.ids.label_of("p7"), state.ids.label_of("p0")]
    np.testing.assert_array_equal(state.vectors_of(np.array([found[0][1]])), [[28, 29, 30, 31]])


def test_vectors_of_no_labels_is_an_empty_float32_block_of_the_partitions_width() -> None:
    empty = loaded().vectors_of(np.array([], dtype=np.int64))
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_a_snapshot_round_trip_keeps_index_parameters_live_points_and_metadata() -> None:
    state = loaded()
    again = PartitionState.from_sections(state.to_sections())
    assert again.index.effective_params() == state.index.effective_params()
    assert again.index.effective_params()["ef_search"] == 48
    assert sorted(again.ids) == sorted(state.ids) and "p3" not in again.ids
    assert again.live.dtype == bool and int(again.live.sum()) == 9
    assert [md for _, _, md in again.get(["p9", "p1"])] == [{"n": 9}, {"n": 1}]


def test_a_snapshot_from_before_the_columnar_id_map_loads_with_the_same_labels() -> None:
    import json

    state = loaded()
    sections = state.to_sections()
    label_ids = [state.ids.id_of(label) for label in range(state.ids.slots)]
    old = {"spec": json.loads(sections["state"])["spec"], "label_ids": label_ids, "free_labels": [3]}
    again = PartitionState.from_sections({"state": json.dumps(old).encode(), "fields": sections["fields"], "index": sections["index"]})
    assert dict(again.ids.items()) == dict(state.ids.items()) and again.ids.free_count == 1
    again.upsert(["new"], np.ones((1, 4), dtype=np.float32), None)
    assert again.ids.slots == 10 and again.get(["new"])[0][1] not in dict(state.ids.items()).values()  # the free label is reused
