"""LabeledIvf (our label -> list column instead of faiss's hashtable direct map) against an IndexIVFPQ with
faiss's own hashtable direct map, through the same random adds, replacements (repeats within a batch
included) and removals: the same points in the same lists, the same reconstructions and the same search
answers; and an index from an older snapshot, direct map and all, loads into it."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from shard.indexes.ivf_lists import LabeledIvf, ListCompaction

DIM, NLIST = 16, 8


def trained(seed: int) -> faiss.IndexIVFPQ:
    rng = np.random.default_rng(seed)
    quantizer = faiss.IndexFlatL2(DIM)
    ivf = faiss.IndexIVFPQ(quantizer, DIM, NLIST, 4, 6)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.train(rng.standard_normal((1000, DIM)).astype(np.float32))
    return ivf


def reference_copy(ivf: faiss.IndexIVFPQ) -> faiss.IndexIVFPQ:
    ref = faiss.deserialize_index(faiss.serialize_index(ivf))
    ref.set_direct_map_type(faiss.DirectMap.Hashtable)
    return ref


def list_contents(ivf: faiss.IndexIVFPQ) -> list[set[int]]:
    lists = ivf.invlists
    return [set(faiss.rev_swig_ptr(lists.get_ids(l), lists.list_size(l)).tolist()) for l in range(ivf.nlist)]


@pytest.mark.parametrize("seed", range(6))
def test_adds_replacements_and_removals_match_faiss_with_its_own_direct_map(seed):
    rng = np.random.default_rng(seed)
    empty = trained(seed)
    ref, ours = reference_copy(empty), LabeledIvf(empty)
    live: set[int] = set()
    for _ in range(25):
        if rng.random() < 0.6:
            labels = rng.integers(0, 400, int(rng.integers(1, 60)))
            vectors = rng.standard_normal((len(labels), DIM)).astype(np.float32)
            ours.add(labels, vectors)
            last = {int(l): row for row, l in enumerate(labels)}  # the last of repeated labels wins
            keep = np.array(sorted(last.values()))
            distinct = labels[keep].astype(np.int64)
            ref.remove_ids(faiss.IDSelectorArray(len(distinct), faiss.swig_ptr(distinct)))
            ref.add_with_ids(vectors[keep], distinct)
            live |= set(distinct.tolist())
        else:
            labels = rng.integers(0, 400, int(rng.integers(1, 40))).astype(np.int64)
            gone = set(labels.tolist()) & live
            assert ours.remove(labels) == len(gone)
            ref.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))
            live -= gone
        assert ours.ntotal == ref.ntotal == len(live)
        assert list_contents(ours.ivf) == list_contents(ref)
    labels = np.array(sorted(live), dtype=np.int64)
    assert ours.present(labels).all() and not ours.present(np.array([400, 401, -1])).any()
    np.testing.assert_array_equal(ours.reconstruct(labels), np.stack([ref.reconstruct(int(l)) for l in labels]))
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    ours.ivf.nprobe = ref.nprobe = NLIST
    got, want = ours.ivf.search(queries, 10), ref.search(queries, 10)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    assert all(set(g) == set(w) for g, w, d in zip(got[1], want[1], want[0]) if len(set(np.round(d, 4))) == len(d))


def test_an_index_saved_with_faiss_hashtable_direct_map_loads_with_every_label_found():
    rng = np.random.default_rng(9)
    ivf = trained(9)
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    labels = rng.permutation(2000)[:300].astype(np.int64)
    ivf.add_with_ids(rng.standard_normal((300, DIM)).astype(np.float32), labels)
    expected = np.stack([ivf.reconstruct(int(l)) for l in labels])
    loaded = LabeledIvf(faiss.deserialize_index(faiss.serialize_index(ivf)))
    assert loaded.ivf.direct_map.type == faiss.DirectMap.NoMap
    np.testing.assert_array_equal(loaded.reconstruct(labels), expected)
    assert loaded.remove(labels[:100]) == 100 and loaded.ntotal == 200


def list_bytes(ivf: faiss.IndexIVFPQ) -> list[tuple[bytes, bytes]]:
    """Every list's ids and codes, in list order and entry order."""
    lists, out = ivf.invlists, []
    for l in range(ivf.nlist):
        size = lists.list_size(l)
        ids = faiss.rev_swig_ptr(lists.get_ids(l), size).tobytes() if size else b""
        codes = faiss.rev_swig_ptr(lists.get_codes(l), size * ivf.code_size).tobytes() if size else b""
        out.append((ids, codes))
    return out


def filled(seed: int, n: int = 3000) -> tuple[LabeledIvf, np.random.Generator]:
    rng = np.random.default_rng(seed)
    ours = LabeledIvf(trained(seed))
    for start in range(0, n, 200):
        ours.add(np.arange(start, start + 200), rng.standard_normal((200, DIM)).astype(np.float32))
    ours.remove(np.arange(0, n, 7))
    return ours, rng


@pytest.mark.parametrize("per_step", [1, 3, NLIST])
def test_compacted_lists_hold_the_same_entries_in_the_same_order_and_answer_the_same(per_step):
    ours, rng = filled(per_step)
    before, old_lists = list_bytes(ours.ivf), ours.ivf.invlists
    queries = rng.standard_normal((30, DIM)).astype(np.float32)
    ours.ivf.nprobe = 3
    want = ours.ivf.search(queries, 10)
    assert ours.wants_compaction
    job = ListCompaction(ours)
    while not job.done:
        job.copy(per_step)
    assert job.install()
    assert ours.ivf.invlists.this != old_lists.this  # the lists were swapped, not left in place
    assert list_bytes(ours.ivf) == before and ours.ivf.invlists.compute_ntotal() == ours.ntotal
    got = ours.ivf.search(queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert not ours.wants_compaction  # nothing written since
    # Still a working index: removal and replacement find their codes in the new lists.
    assert ours.remove(np.array([1, 2, 3])) == 3 and ours.ntotal == 3000 - len(range(0, 3000, 7)) - 3
    ours.add(np.array([2, 5]), queries[:2])  # 2 comes back, 5 is replaced
    assert [sum(label in c for c in list_contents(ours.ivf)) for label in (2, 5)] == [1, 1] and ours.ntotal == 3000 - len(range(0, 3000, 7)) - 2


@pytest.mark.parametrize("write", ["add", "remove"])
def test_a_write_between_compaction_steps_makes_it_stale_and_install_changes_nothing(write):
    ours, rng = filled(11)
    job = ListCompaction(ours)
    job.copy(2)
    if write == "add":
        ours.add(np.array([99_999]), rng.standard_normal((1, DIM)).astype(np.float32))
    else:
        assert ours.remove(np.array([1])) == 1
    after_write, lists = list_bytes(ours.ivf), ours.ivf.invlists
    while not job.done:
        job.copy(2)
    assert job.stale and not job.install()
    assert ours.ivf.invlists.this == lists.this and list_bytes(ours.ivf) == after_write
    assert ours.present(np.array([99_999]))[0] == (write == "add") and ours.present(np.array([1]))[0] == (write == "add")


def test_an_unfinished_compaction_installs_nothing():
    ours, _ = filled(12)
    lists = ours.ivf.invlists
    job = ListCompaction(ours)
    job.copy(NLIST - 1)
    assert not job.install() and ours.ivf.invlists.this == lists.this


def test_compaction_is_wanted_once_a_hundredth_of_the_index_changed_since_the_last():
    ours, rng = filled(13)
    ours.compact()
    assert not ours.wants_compaction
    written = 0
    while not ours.wants_compaction:
        ours.add(np.array([10_000 + written]), rng.standard_normal((1, DIM)).astype(np.float32))
        written += 1
    assert written == int(np.ceil(0.01 * ours.ntotal))
    ours.compact()
    assert not ours.wants_compaction
    ours.remove(np.arange(10_000, 10_000 + written))  # removals count as changes too
    assert ours.wants_compaction
