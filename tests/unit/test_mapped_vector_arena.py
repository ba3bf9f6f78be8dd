"""Raw vectors under a directory live in a memory-mapped scratch file, not process memory: every index kind
reads and scores the same as with an in-memory arena through growth, deletes and snapshots; no file is left
in the directory; and where the file cannot grow (a full disk) the arena moves to memory and loses nothing."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import shard.indexes.arena as arena_module
from quiver.filters import Range
from quiver.specs import PartitionKey, PartitionSpec
from shard.indexes import QueryKnobs
from shard.indexes.arena import VectorArena
from shard.partition_state import PartitionState, SearchPolicy

DIM = 16
PARAMS = {"hnsw": {"m": 8, "ef_construction": 40}, "flat": {}, "ivf_pq": {"nlist": 4, "m": 4, "train_size": 256, "refine": 4}}


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def loaded(kind: str, vector_dir: str | None, n: int = 3000) -> PartitionState:
    spec = PartitionSpec(PartitionKey("docs", 0, 1), DIM, "ip", kind, PARAMS[kind])
    state = PartitionState(spec, vector_dir=vector_dir)
    rng = np.random.default_rng(7)
    rows = unit(rng, n)
    for start in range(0, n, 700):  # in batches, so the arena grows (twice) with rows already in it
        stop = min(n, start + 700)
        state.upsert([f"p{i}" for i in range(start, stop)], rows[start:stop], [{"n": i} for i in range(start, stop)])
    state.delete([f"p{i}" for i in range(0, n, 5)])
    if state.index.wants_training:
        state.index.train(None)
    return state


def answers(state: PartitionState) -> list:
    queries = unit(np.random.default_rng(8), 5)
    policy = SearchPolicy()
    out = []
    for flt in (None, Range("n", lt=60)):
        for force_exact in (False, True):
            out.append([(h.ids, np.round(h.scores, 5).tolist()) for h in state.search(queries, 10, flt, QueryKnobs(), force_exact, policy)])
    return out


@pytest.mark.parametrize("kind", ["hnsw", "flat", "ivf_pq"])
def test_an_index_with_mapped_raw_vectors_answers_as_one_holding_them_in_memory(kind, tmp_path):
    in_memory, mapped = loaded(kind, None), loaded(kind, str(tmp_path))
    assert answers(mapped) == answers(in_memory)
    labels = np.array([1, 2, 3, 2999], dtype=np.int64)
    np.testing.assert_array_equal(mapped.vectors_of(labels), in_memory.vectors_of(labels))
    assert os.listdir(tmp_path) == []  # the scratch file is unlinked from the start
    again = PartitionState.from_sections(mapped.to_sections(), str(tmp_path))
    assert answers(again) == answers(in_memory)


def test_mapped_rows_are_not_counted_as_process_memory(tmp_path):
    in_memory, mapped = VectorArena(DIM, 4096), VectorArena(DIM, 4096, directory=tmp_path)
    assert mapped.mapped and not in_memory.mapped
    assert in_memory.memory_bytes() - mapped.memory_bytes() == 4096 * DIM * 4


def test_an_arena_that_cannot_grow_its_file_moves_to_memory_and_keeps_every_row(tmp_path, monkeypatch):
    arena = VectorArena(DIM, 1024, directory=tmp_path)
    rows = unit(np.random.default_rng(1), 1000)
    arena.put(np.arange(1000, dtype=np.int64), rows)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(arena_module.os, "posix_fallocate", full)
    more = unit(np.random.default_rng(2), 2000)
    arena.put(np.arange(1000, 3000, dtype=np.int64), more)  # needs more rows than the file holds
    assert not arena.mapped
    np.testing.assert_array_equal(arena.get(np.arange(3000, dtype=np.int64)), np.concatenate([rows, more]))


def test_an_arena_whose_directory_cannot_hold_a_file_starts_in_memory(tmp_path):
    arena = VectorArena(DIM, 1024, directory=tmp_path / "missing")
    arena.put(np.array([5], dtype=np.int64), np.ones((1, DIM), dtype=np.float32))
    assert not arena.mapped and arena.get(np.array([5]))[0].tolist() == [1.0] * DIM


@pytest.mark.parametrize("kind", ["hnsw", "flat", "ivf_pq"])
def test_a_snapshot_written_through_scratch_files_is_byte_for_byte_the_in_memory_one_and_leaves_no_file(kind, tmp_path):
    import dataclasses

    state = loaded(kind, str(tmp_path))
    through_files = state.index.to_bytes()
    assert isinstance(through_files, memoryview)  # a map of a scratch file, not a copy in memory
    state.index.config = dataclasses.replace(state.index.config, vector_dir=None)
    in_memory = state.index.to_bytes()
    assert isinstance(in_memory, bytes) and bytes(through_files) == in_memory
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["hnsw", "ivf_pq"])
def test_a_snapshot_whose_scratch_files_cannot_be_made_is_packed_in_memory_instead(kind, tmp_path):
    import shutil

    scratch = tmp_path / "partition"
    scratch.mkdir()
    state = loaded(kind, str(scratch))
    expected = answers(state)
    shutil.rmtree(scratch)  # as good as a full disk for making files there
    sections = state.to_sections()
    assert isinstance(sections["index"], bytes)
    assert answers(PartitionState.from_sections(sections)) == expected
