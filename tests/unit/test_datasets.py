"""Datasets: recall arithmetic, brute-force ground truth, the GloVe split and its cache."""

import numpy as np
import pytest

from loadtest.datasets import (
    Dataset,
    exact_ground_truth,
    gaussian_mixture,
    load_glove50,
    load_vectors_file,
    recall_at_k,
)


def numpy_top_k(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        score = -((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    else:
        score = q @ b.T
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def test_recall_hand_cases():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), truth, 3) == 1.0
    assert recall_at_k(np.array([[3, 2, 1], [9, 9, 9]]), truth, 3) == 0.5  # order inside top-k is free
    assert recall_at_k(np.array([[1, -1, -1], [6, 5, -1]]), truth, 3) == pytest.approx((1 / 3 + 2 / 3) / 2)
    # Only the first k of each side count.
    assert recall_at_k(np.array([[9, 1, 2], [4, 9, 9]]), truth, 1) == 0.5
    assert recall_at_k(np.array([[2, 1, 7, 8], [5, 4, 7, 8]]), truth, 2) == 1.0


def test_recall_rejects_bad_shapes():
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((3, 3), int), np.zeros((2, 3), int), 3)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("chunk_rows", [7, 1 << 18])  # small chunks exercise the heap merge
def test_exact_ground_truth_matches_numpy(metric, chunk_rows):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((300, 16), dtype=np.float32) * rng.uniform(0.2, 3.0, (300, 1)).astype(np.float32)
    queries = rng.standard_normal((40, 16), dtype=np.float32)
    found = exact_ground_truth(base, queries, 10, metric, chunk_rows=chunk_rows)
    assert found.dtype == np.int64 and found.shape == (40, 10)
    np.testing.assert_array_equal(found, numpy_top_k(base, queries, 10, metric))


def test_exact_ground_truth_rejects_k_beyond_base():
    with pytest.raises(ValueError):
        exact_ground_truth(np.zeros((5, 4), np.float32), np.zeros((1, 4), np.float32), 6, "l2")


def test_glove_subset_shapes_split_and_cache(tmp_path):
    first = load_glove50(n_base=5000, n_queries=100, gt_k=10, cache_dir=tmp_path)
    assert isinstance(first, Dataset) and first.metric == "cosine"
    assert first.base.shape == (5000, 50) and first.queries.shape == (100, 50)
    assert first.ground_truth.shape == (100, 10) and first.ground_truth.dtype == np.int64
    for array in (first.base, first.queries):
        assert array.dtype == np.float32 and array.flags.c_contiguous
    base_rows = {row.tobytes() for row in first.base}
    assert not any(row.tobytes() in base_rows for row in first.queries)
    np.testing.assert_array_equal(
        first.ground_truth[:5], numpy_top_k(first.base, first.queries[:5], 10, "cosine")
    )
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy"] * 3  # no temp files left

    second = load_glove50(n_base=5000, n_queries=100, gt_k=10, cache_dir=tmp_path)
    for a, b in ((first.base, second.base), (first.queries, second.queries),
                 (first.ground_truth, second.ground_truth)):
        np.testing.assert_array_equal(a, b)


def test_glove_cache_dir_comes_from_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("QUIVER_CACHE", str(tmp_path / "env"))
    load_glove50(n_base=1000, n_queries=10, gt_k=5)
    assert len(list((tmp_path / "env").glob("*.npy"))) == 3


def test_gaussian_mixture_is_deterministic_per_seed():
    a = gaussian_mixture(2000, 24, 30, seed=7, n_queries=20, gt_k=5)
    b = gaussian_mixture(2000, 24, 30, seed=7, n_queries=20, gt_k=5)
    c = gaussian_mixture(2000, 24, 30, seed=8, n_queries=20, gt_k=5)
    np.testing.assert_array_equal(a.base, b.base)
    np.testing.assert_array_equal(a.queries, b.queries)
    np.testing.assert_array_equal(a.ground_truth, b.ground_truth)
    assert not np.array_equal(a.base, c.base)
    assert a.base.dtype == np.float32 and a.base.shape == (2000, 24) and a.queries.shape == (20, 24)
    np.testing.assert_array_equal(a.ground_truth, numpy_top_k(a.base, a.queries, 5, "l2"))


def test_gaussian_mixture_can_skip_ground_truth():
    d = gaussian_mixture(100_000, 8, 100, seed=1, n_queries=10, metric="cosine", gt_k=0)
    assert d.ground_truth.shape == (10, 0) and d.metric == "cosine"


def test_vector_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_vectors_file(tmp_path / "x.npy"), x)

    dims = np.full((6, 1), 5, dtype="<i4")
    np.hstack([dims, x.view("<i4")]).tofile(tmp_path / "x.fvecs")
    np.testing.assert_array_equal(load_vectors_file(tmp_path / "x.fvecs"), x)

    ids = rng.integers(0, 1000, (6, 5), dtype=np.int32)
    np.hstack([dims, ids]).tofile(tmp_path / "x.ivecs")
    np.testing.assert_array_equal(load_vectors_file(tmp_path / "x.ivecs"), ids)

    b = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    np.hstack([dims.view(np.uint8), b]).tofile(tmp_path / "x.bvecs")
    np.testing.assert_array_equal(load_vectors_file(tmp_path / "x.bvecs"), b.astype(np.float32))

    (tmp_path / "bad.fvecs").write_bytes(np.array([5, 1, 2], dtype="<i4").tobytes())  # a torn row
    with pytest.raises(ValueError):
        load_vectors_file(tmp_path / "bad.fvecs")
