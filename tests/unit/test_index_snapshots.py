"""Index snapshots are data, never code: the libraries' own formats in a checksummed container, no pickle."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from shard.indexes import IndexConfig, QueryKnobs, create_index, load_index
from shard.indexes.blob_container import pack, unpack

CONFIGS = {
    "hnsw": IndexConfig("hnsw", 16, "ip", {"m": 8, "ef_construction": 64, "ef_search": 32}),
    "flat": IndexConfig("flat", 16, "l2", {}),
    "ivf_pq_untrained": IndexConfig("ivf_pq", 16, "ip", {"nlist": 8, "m": 4, "nbits": 4, "train_size": 100_000}),
    "ivf_pq_trained": IndexConfig("ivf_pq", 16, "ip", {"nlist": 8, "m": 4, "nbits": 4, "train_size": 400}),
}


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_snapshot_round_trip_answers_every_search_the_same_and_keeps_deletes(name: str) -> None:
    config = CONFIGS[name]
    index = create_index(config)
    vectors = unit_rows(600, 16)
    index.add(np.arange(600), vectors)
    if index.wants_training:
        index.train(None)
    index.remove(np.arange(0, 600, 3))
    queries = unit_rows(20, 16, seed=1)
    knobs = QueryKnobs(ef_search=64, nprobe=8)
    data = index.to_bytes()
    assert b"\x80\x05" not in data[:2] and not data.startswith(b"\x80")  # not a pickle stream
    loaded = load_index(config, data)
    before, after = index.search(queries, 10, knobs, None), loaded.search(queries, 10, knobs, None)
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    assert not np.isin(after.labels, np.arange(0, 600, 3)).any()
    assert loaded.trained == index.trained
    assert loaded.effective_params() == index.effective_params()
    live = np.setdiff1d(np.arange(600), np.arange(0, 600, 3))
    if name != "ivf_pq_trained":  # PQ keeps codes, not vectors, once raw vectors are released
        np.testing.assert_array_equal(loaded.vectors(live[:50]), index.vectors(live[:50]))


class _RunsCode:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.marker),))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_pickle_from_a_peer_is_refused_and_never_run(name: str, tmp_path: Path) -> None:
    payload = _RunsCode()
    payload.marker = str(tmp_path / "ran")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not an index container"):
        load_index(CONFIGS[name], pickle.dumps({"index": payload, "arena": payload}))
    assert not (tmp_path / "ran").exists()


def test_a_corrupt_or_truncated_blob_is_refused_before_any_library_sees_it() -> None:
    data = bytearray(pack({"params": {"m": 8}}, {"graph": b"x" * 100, "other": b"y" * 10}))
    assert unpack(bytes(data)) == ({"params": {"m": 8}}, {"graph": b"x" * 100, "other": b"y" * 10})
    flipped = bytearray(data)
    flipped[-50] ^= 1
    with pytest.raises(ValueError, match="'graph'"):
        unpack(bytes(flipped))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        unpack(bytes(data[:-1]))
    with pytest.raises(ValueError, match="has 3 trailing bytes"):
        unpack(bytes(data) + b"zzz")
    magic_and_length = len(data) - len(data.split(b"{", 1)[1]) - 1
    with pytest.raises(ValueError, match="index container is truncated"):
        unpack(bytes(data[: magic_and_length - 1]))  # the magic, but not all of the header's length
    assert magic_and_length > 4
    with pytest.raises(ValueError, match="header is unreadable"):
        unpack(bytes(data[:magic_and_length]) + b"{not json")
    with pytest.raises(ValueError, match="header is unreadable"):
        unpack(bytes(data[:magic_and_length]))  # the whole length field, then nothing
