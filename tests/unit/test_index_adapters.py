"""Index adapters and vector checks at their edges."""
from __future__ import annotations

import numpy as np
import pytest

from quiver.errors import FailedPrecondition, InvalidArgument
from quiver.validation import prepare_vectors
from shard.indexes import IndexConfig, QueryKnobs, create_index
from shard.indexes.exact import exact_topk


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_retraining_ivf_pq_without_kept_raw_vectors_is_refused_and_loses_nothing():
    index = create_index(IndexConfig("ivf_pq", 16, "ip", {"nlist": 8, "m": 4, "nbits": 4, "train_size": 500}))
    vectors = unit_rows(600, 16)
    index.add(np.arange(600), vectors)
    assert index.wants_training and not index.trained
    assert index.train(None) == 600
    assert index.trained
    with pytest.raises(FailedPrecondition):
        index.train(vectors[:300])
    hits = index.search(vectors[:5], 3, QueryKnobs(nprobe=8), None)
    assert (hits.labels >= 0).all()


def test_ivf_pq_parameters_that_cannot_train_are_refused_at_creation():
    with pytest.raises(InvalidArgument, match="2\\*\\*nbits"):
        create_index(IndexConfig("ivf_pq", 16, "ip", {"nlist": 8, "m": 4, "nbits": 14, "train_size": 1000}))
    with pytest.raises(InvalidArgument, match="refine"):
        create_index(IndexConfig("ivf_pq", 16, "ip", {"nlist": 8, "m": 4, "refine": 1000}))


def test_hnsw_reused_label_returns_the_new_vector_not_the_old_one():
    index = create_index(IndexConfig("hnsw", 16, "ip", {}))
    vectors = unit_rows(200, 16)
    index.add(np.arange(200), vectors)
    index.remove(np.array([7]))
    index.add(np.array([7]), vectors[100:101])
    assert np.allclose(index.vectors(np.array([7]))[0], vectors[100])
    hits = index.search(vectors[100:101], 2, QueryKnobs(), None)
    assert set(hits.labels[0].tolist()) == {7, 100}


def test_cosine_normalisation_survives_huge_and_tiny_magnitudes():
    vectors = np.array([[1e20, 1e20, 0, 0], [1e-25, 0, 1e-25, 0]], dtype=np.float32)
    out = prepare_vectors(vectors, "cosine")
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_exact_topk_in_chunks_equals_one_pass(monkeypatch):
    import shard.indexes.exact as exact

    base, queries = unit_rows(500, 8, 1), unit_rows(40, 8, 2)
    whole = exact_topk(queries, base, np.arange(500), 5, "l2")
    monkeypatch.setattr(exact, "_MAX_SCORES", 500 * 7)
    chunked = exact_topk(queries, base, np.arange(500), 5, "l2")
    assert np.array_equal(whole.labels, chunked.labels)
