"""IdMap against a plain dict model: any sequence of assigns, removes, snapshots and compactions leaves the
same id <-> label map, labels are reused (the label space follows the peak live count), and lookups stay
right across hash collisions."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import shard.id_map as id_map_module
from shard.id_map import IdMap

_IDS = st.text(alphabet="abcé😀-", min_size=1, max_size=6)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.lists(_IDS, max_size=12)),
        st.tuples(st.just("remove"), st.lists(_IDS, max_size=12)),
        st.tuples(st.just("reload"), st.just([])),
    ),
    max_size=40,
)


def check_same(ids: IdMap, model: dict[str, int]) -> None:
    assert len(ids) == len(model)
    assert dict(ids.items()) == model
    for point_id, label in model.items():
        assert ids.label_of(point_id) == label and ids.id_of(label) == point_id and point_id in ids
    assert ids.labels_of(list(model)).tolist() == list(model.values())
    assert sorted(ids.live_labels().tolist()) == sorted(model.values())


def run_against_model(ops: list, monkeypatch_small: bool = False) -> None:
    ids, model, peak = IdMap(), {}, 0
    for op, batch in ops:
        if op == "assign":
            labels = ids.assign(batch).tolist()
            for point_id, label in zip(batch, labels):
                assert model.setdefault(point_id, label) == label  # an id present keeps its label
            assert len(set(model.values())) == len(model)  # no two ids share a label
        elif op == "remove":
            freed = ids.remove(batch)
            assert sorted(freed) == sorted({model.pop(i) for i in dict.fromkeys(batch) if i in model})
        else:
            ids = IdMap.from_bytes(ids.to_bytes())
        peak = max(peak, len(model))
        assert ids.slots <= peak  # freed labels are reused before new ones are made
        check_same(ids, model)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_the_id_map_agrees_with_a_dict_under_any_assigns_removes_and_reloads(ops):
    run_against_model(ops)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_the_id_map_agrees_with_a_dict_when_every_merge_and_compaction_runs_early(ops):
    saved = id_map_module._MIN_RECENT
    id_map_module._MIN_RECENT = 0  # every assign merges the recent ids into the sorted columns
    try:
        run_against_model(ops)
    finally:
        id_map_module._MIN_RECENT = saved


def test_ids_whose_hashes_collide_are_told_apart_by_their_bytes(monkeypatch):
    monkeypatch.setattr(id_map_module, "_MIN_RECENT", 0)
    # Python ints hash to themselves except -1; strings cannot be made to collide on demand, so the map
    # hashes through a patched hash() that sends every id to one of two values.
    monkeypatch.setattr(id_map_module, "hash", lambda s: len(s) % 2, raising=False)
    ids = IdMap()
    names = [f"p{n}" for n in range(50)] + [f"q{n}" for n in range(100, 150)]
    labels = ids.assign(names)
    assert ids.labels_of(names).tolist() == labels.tolist()
    ids.remove(names[::3])
    kept = {n: int(l) for n, l in zip(names, labels)} | {}
    for n in names[::3]:
        kept.pop(n)
    check_same(ids, kept)


def test_a_large_map_compacts_its_buffer_and_keeps_the_label_space_at_the_peak():
    ids = IdMap()
    first = [f"point-{n:07d}" for n in range(100_000)]
    ids.assign(first)
    for round_ in range(5):  # churn: remove half, write as many new ids
        gone = first[round_ % 2 :: 2]
        ids.remove(gone)
        fresh = [f"r{round_}-{n}" for n in range(len(gone))]
        ids.assign(fresh)
        gone_set = set(gone)
        first = [i for i in first if i not in gone_set] + fresh
    assert ids.slots == 100_000 and len(ids) == 100_000
    assert sorted(ids) == sorted(first)
    live_bytes = sum(len(i.encode()) for i in first)
    assert ids._used <= 2 * live_bytes + 2**20  # dead bytes were compacted away, not kept
    assert np.all(ids.labels_of(first) >= 0)


def test_a_snapshot_changes_nothing_in_the_map_it_reads():
    """to_bytes runs under the partition's read lock, beside searches decoding ids: it must compact into new
    arrays, never rewrite the live buffer or offsets (a rewrite made concurrent searches return torn ids)."""
    ids = IdMap()
    names = [f"point-{n:06d}-xxxx" for n in range(5000)]
    ids.assign(names)
    ids.remove(names[::2])  # dead bytes to compact away
    buffer, offsets, used = ids._buffer, ids._offsets.copy(), ids._used
    data = ids.to_bytes()
    assert ids._buffer is buffer and ids._used == used and np.array_equal(ids._offsets, offsets)
    again = IdMap.from_bytes(data)
    assert dict(again.items()) == dict(ids.items()) and again._used == sum(len(n) for n in names[1::2])


def test_the_recent_dict_is_merged_by_its_cap_not_by_an_eighth_of_a_large_map(monkeypatch):
    """A recent-dict entry costs ~140 B: an eighth of a 10M-id map waiting there would be 17 B a point."""
    monkeypatch.setattr(id_map_module, "_MIN_RECENT", 100)
    monkeypatch.setattr(id_map_module, "_MAX_RECENT", 1000)
    ids, names = IdMap(), [f"id-{n}" for n in range(40_000)]
    for start in range(0, len(names), 500):
        ids.assign(names[start : start + 500])
        assert len(ids._recent) <= 1000
    ids.remove(names[::7])
    ids.assign([f"again-{n}" for n in range(3000)])  # merged past removed entries, which are dropped
    assert np.all(ids._sorted_labels >= 0)
    assert np.all(np.diff(ids._sorted_hashes) >= 0)
    model = {n: ids.label_of(n) for n in names if n not in set(names[::7])}
    assert None not in model.values() and len(set(model.values())) == len(model)
    check_same(ids, {**model, **{f"again-{n}": ids.label_of(f"again-{n}") for n in range(3000)}})


def test_ids_past_the_narrow_offsets_reach_are_still_found_after_the_offsets_widen(monkeypatch):
    monkeypatch.setattr(id_map_module, "_NARROW_OFFSET_LIMIT", 1000)  # stands in for 4 GiB
    ids, names = IdMap(), [f"point-{n:05d}" for n in range(500)]  # 5,500 bytes of ids
    labels = ids.assign(names)
    assert ids._offsets.dtype == np.int64
    assert ids.ids_of(labels) == names
    check_same(ids, dict(zip(names, labels.tolist())))
    again = IdMap.from_bytes(ids.to_bytes())
    assert again._offsets.dtype == np.int64 and again.ids_of(labels) == names


def test_a_map_of_short_ids_costs_its_id_bytes_plus_its_columns_and_no_more():
    ids, names = IdMap(), [f"doc-{n:09d}" for n in range(200_000)]
    for start in range(0, len(names), 5000):
        ids.assign(names[start : start + 5000])
    per_id = ids.memory_bytes() / len(names)
    # 13 id bytes, a uint32 offset, a uint16 length, an int64 hash and an int32 label: 31 B, plus the
    # ids still in the recent dict.
    assert 31 <= per_id <= 31 + 140 * id_map_module._MAX_RECENT / len(names) + 1, per_id
    assert ids._offsets.dtype == np.uint32 and ids._lengths.dtype == np.uint16 and ids._sorted_labels.dtype == np.int32
