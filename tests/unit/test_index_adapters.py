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


def test_ivf_pq_without_raw_vectors_searches_a_subset_by_its_codes_and_reconstructs_vectors():
    """No `refine`: the raw vectors are dropped after training, so a subset search scans the compressed
    codes of exactly those labels, and stored vectors come back as PQ reconstructions."""
    dim = 16
    index = create_index(IndexConfig("ivf_pq", dim, "ip", {"nlist": 8, "m": 8, "nbits": 6, "train_size": 800}))
    base = unit_rows(1200, dim, seed=3)
    index.add(np.arange(1200), base)
    index.train(None)
    assert index.trained
    subset = np.arange(0, 1200, 7)
    queries = base[subset[:20]]
    hits = index.search_subset(queries, 5, subset)
    assert set(hits.labels.ravel().tolist()) <= set(subset.tolist())  # nothing outside the subset
    assert (hits.labels >= 0).all()  # every query filled: all lists are scanned
    found_itself = np.mean(hits.labels[:, 0] == subset[:20])
    assert found_itself >= 0.8, found_itself  # PQ distances are approximate; a point is almost always its own best
    masked = np.zeros(1200, dtype=bool)
    masked[subset] = True
    assert np.array_equal(index.search_exact(queries, 5, masked).labels, hits.labels)
    reconstructed = index.vectors(np.array([0, 7, 1199]))
    assert reconstructed.shape == (3, dim)
    cosines = np.sum(reconstructed * base[[0, 7, 1199]], axis=1) / np.linalg.norm(reconstructed, axis=1)
    assert (cosines > 0.8).all(), cosines


def test_ivf_pq_memory_estimate_matches_its_serialized_index_plus_its_label_column():
    import faiss

    dim, n = 16, 1200
    index = create_index(IndexConfig("ivf_pq", dim, "ip", {"nlist": 8, "m": 8, "nbits": 6, "train_size": 800}))
    index.add(np.arange(n), unit_rows(n, dim, seed=4))
    index.train(None)
    # Codes, ids, centroids and codebooks (plus a few headers); no faiss direct map: the label -> list
    # column (4 B a label slot) is the only addition in memory.
    serialized = len(faiss.serialize_index(index._ivf))
    column = index._lists._list_of.nbytes
    assert abs(index.memory_bytes() - (serialized + column)) <= 2048, (index.memory_bytes(), serialized, column)


def test_ivf_pq_defaults_follow_faiss_guidance_for_training():
    """Unset IVF-PQ parameters: 1024 lists, 39 training points per list (faiss warns below that), at least
    10,000 points, m the largest divisor of the dimension up to 64 and dim/2, 8 bits, nprobe 16."""
    from shard.indexes.ivf_pq import resolve_params

    assert resolve_params(128, {}) == {"nlist": 1024, "m": 64, "nbits": 8, "nprobe": 16, "train_size": 39 * 1024, "refine": 0}
    assert resolve_params(50, {"nlist": 100})["train_size"] == 10_000
    assert resolve_params(50, {"nlist": 300})["train_size"] == 39 * 300
    assert resolve_params(50, {})["m"] == 25


@pytest.mark.parametrize("space", ["l2", "ip"])
def test_hnsw_scores_are_the_exact_scores_of_the_points_found(space):
    """Scores on one scale for every index: l2 is minus the squared distance, ip the inner product, so the
    router can merge HNSW shards with exact ones."""
    index = create_index(IndexConfig("hnsw", 16, space, {}))
    vectors = unit_rows(300, 16, 5) * 3.0  # not unit length: l2 and ip differ
    index.add(np.arange(300), vectors)
    queries = unit_rows(5, 16, 6)
    hits = index.search(queries, 4, QueryKnobs(ef_search=200), None)
    found = vectors[hits.labels]
    if space == "l2":
        expected = -((found - queries[:, None, :]) ** 2).sum(axis=2)
    else:
        expected = (found * queries[:, None, :]).sum(axis=2)
    np.testing.assert_allclose(hits.scores, expected, rtol=1e-4, atol=1e-4)


def test_an_untrained_ivf_pq_exact_search_under_a_mask_is_the_exact_l2_top_k_of_the_masked_points():
    """Before training, IVF-PQ holds the raw vectors: its exact search is exact, in the index's own space."""
    index = create_index(IndexConfig("ivf_pq", 16, "l2", {"nlist": 8, "m": 4, "nbits": 4, "train_size": 5000}))
    vectors = unit_rows(600, 16, 3) * 2.0
    index.add(np.arange(600), vectors)
    assert not index.trained
    mask = np.zeros(600, dtype=bool)
    mask[::3] = True
    queries = unit_rows(4, 16, 4)
    hits = index.search_exact(queries, 5, mask)
    distances = ((vectors[None, :, :] - queries[:, None, :]) ** 2).sum(axis=2)
    distances[:, ~mask] = np.inf
    expected = np.argsort(distances, axis=1, kind="stable")[:, :5]
    assert hits.labels.tolist() == expected.tolist()
    np.testing.assert_allclose(hits.scores, -np.take_along_axis(distances, expected, axis=1), rtol=1e-4, atol=1e-4)
