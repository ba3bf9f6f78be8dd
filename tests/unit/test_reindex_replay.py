"""The reindex's replay merges consecutive logged upserts into one write into v+1: applying the groups must
leave every point as applying the logged writes one by one does."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.v1 import shard_pb2, types_pb2
from router import reindex
from router.reindex import merged_upserts, replay_groups

DIM = 2
IDS = [f"p{i}" for i in range(6)]


def _write(lsn: int, delete: bool, ids: list[str], tag: int | None) -> shard_pb2.LoggedWrite:
    if delete:
        return shard_pb2.LoggedWrite(lsn=lsn, delete=True, ids=ids)
    vectors = np.array([[lsn, n] for n in range(len(ids))], dtype="<f4").tobytes()
    metadata = [types_pb2.Metadata(fields={"tag": types_pb2.Value(int_value=tag)}) for _ in ids] if tag is not None else []
    return shard_pb2.LoggedWrite(lsn=lsn, ids=ids, vectors=vectors, metadata=metadata)


def _points_after(writes) -> dict[str, tuple[bytes, bytes]]:
    """id -> (vector bytes, serialised metadata) after applying `writes`, each one a step."""
    store: dict[str, tuple[bytes, bytes]] = {}
    for write in writes:
        if write.delete:
            for point_id in write.ids:
                store.pop(point_id, None)
            continue
        vectors = np.frombuffer(write.vectors, dtype="<f4").reshape(len(write.ids), DIM)
        for n, point_id in enumerate(write.ids):
            metadata = write.metadata[n].SerializeToString() if write.metadata else b""
            store[point_id] = (vectors[n].tobytes(), metadata)
    return store


def _grouped(writes) -> list[shard_pb2.LoggedWrite]:
    applied = []
    for group in replay_groups(writes):
        if group[0].delete:
            assert len(group) == 1
            applied.append(group[0])
        else:
            ids, vectors, metadata = merged_upserts(group)
            assert len(ids) == len(set(ids)), "a merged upsert holds a point twice"
            applied.append(shard_pb2.LoggedWrite(ids=ids, vectors=vectors, metadata=metadata))
    return applied


logged = st.lists(
    st.tuples(st.booleans(), st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True), st.one_of(st.none(), st.integers(0, 9))),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(logged)
def test_applying_replay_groups_equals_applying_each_logged_write(spec) -> None:
    writes = [_write(lsn, delete, ids, tag) for lsn, (delete, ids, tag) in enumerate(spec, start=1)]
    assert _points_after(_grouped(writes)) == _points_after(writes)
    # Every write is in exactly one group, in log order.
    assert [w.lsn for g in replay_groups(writes) for w in g] == [w.lsn for w in writes]


def test_consecutive_upserts_of_distinct_points_become_one_write() -> None:
    writes = [_write(n, False, [f"w{n}"], None) for n in range(1, 51)]
    groups = list(replay_groups(writes))
    assert len(groups) == 1 and len(groups[0]) == 50


def test_a_group_stops_at_the_point_limit(monkeypatch) -> None:
    monkeypatch.setattr(reindex, "_REPLAY_GROUP_POINTS", 4)
    writes = [_write(n, False, [f"a{n}", f"b{n}"], None) for n in range(1, 6)]
    assert [len(g) for g in replay_groups(writes)] == [2, 2, 1]
