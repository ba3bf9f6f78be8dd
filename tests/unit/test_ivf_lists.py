"""LabeledIvf (our label -> list column instead of faiss's hashtable direct map) against an IndexIVFPQ with
faiss's own hashtable direct map, through the same random adds, replacements (repeats within a batch
included) and removals: the same points in the same lists, the same reconstructions and the same search
answers; and an index from an older snapshot, direct map and all, loads into it."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from shard.indexes.ivf_lists import LabeledIvf

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
