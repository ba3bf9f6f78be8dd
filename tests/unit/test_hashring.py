"""Jump consistent hash: reference values, minimal movement on growth, evenness, and stability."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from router.hashring import blake2b_64, jump_hash, jump_hash_many, shard_for_key, shards_for_keys

KEYS = [f"point-{i}" for i in range(100_000)]

# Outputs of the reference algorithm, taken from an independent implementation (the jump-consistent-hash
# package's C extension); (256, 1024) -> 520 is also the example in that package's README.
REFERENCE = [(0, 1, 0), (0, 10, 0), (1, 10, 6), (256, 1024, 520), (2**64 - 1, 100, 92), (123456789, 7, 0)]


@pytest.fixture(scope="module")
def hashes() -> np.ndarray:
    return np.fromiter((blake2b_64(k.encode()) for k in KEYS), dtype=np.uint64, count=len(KEYS))


@pytest.mark.parametrize(("key", "buckets", "expected"), REFERENCE)
def test_matches_reference_algorithm(key: int, buckets: int, expected: int) -> None:
    assert jump_hash(key, buckets) == expected
    assert jump_hash_many(np.array([key], dtype=np.uint64), buckets).tolist() == [expected]


def test_fixed_keys_map_to_fixed_shards() -> None:
    # A change here reroutes every stored point: it must never happen silently.
    assert blake2b_64(b"a") == 3405396810240292928
    assert [shard_for_key("a", n) for n in (1, 2, 3, 8, 10, 100)] == [0, 0, 0, 3, 3, 64]
    assert [shard_for_key("point-1", n) for n in (1, 2, 3, 8, 10, 100)] == [0, 0, 2, 2, 2, 73]
    assert [shard_for_key("\u00fc\u00f1\u00ed", n) for n in (1, 2, 3, 8, 10, 100)] == [0, 1, 2, 2, 9, 29]


def test_same_shards_in_processes_with_different_hash_seeds() -> None:
    script = "from router.hashring import shards_for_keys; print(shards_for_keys([f'k{i}' for i in range(500)], 7).tolist())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(shards_for_keys([f"k{i}" for i in range(500)], 7).tolist())


@pytest.mark.parametrize("n", range(1, 17))
def test_growth_moves_about_one_in_n_plus_one_keys_and_only_to_the_new_shard(hashes: np.ndarray, n: int) -> None:
    before = jump_hash_many(hashes, n)
    after = jump_hash_many(hashes, n + 1)
    moved = before != after
    assert set(np.unique(after[moved]).tolist()) <= {n}
    assert moved.sum() <= 1.1 * len(KEYS) / (n + 1)


@pytest.mark.parametrize("n", [2, 3, 7, 16, 100])
def test_keys_spread_evenly(hashes: np.ndarray, n: int) -> None:
    counts = np.bincount(jump_hash_many(hashes, n), minlength=n)
    expected = len(KEYS) / n
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # The 99.9th percentile of chi-square with n-1 degrees of freedom is below 3(n-1) + 20 for these n.
    assert chi_square < 3 * (n - 1) + 20
    assert counts.max() / counts.min() < (1.15 if n <= 16 else 1.5)


def test_vectorised_matches_scalar() -> None:
    keys = KEYS[:2000]
    for n in (1, 5, 64, 1000):
        assert shards_for_keys(keys, n).tolist() == [shard_for_key(k, n) for k in keys]


def test_hash_is_a_parameter() -> None:
    assert shard_for_key("anything", 10, hash64=lambda _: 256) == jump_hash(256, 10)


def test_rejects_zero_buckets() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)
    with pytest.raises(ValueError):
        shards_for_keys(["a"], 0)


def test_the_scalar_and_batch_jump_hash_agree_on_many_random_keys():
    keys = np.random.default_rng(11).integers(0, 2**64, size=10_000, dtype=np.uint64)
    for buckets in (1, 2, 3, 7, 64, 1000):
        assert jump_hash_many(keys, buckets).tolist() == [jump_hash(int(k), buckets) for k in keys.tolist()]


def test_zero_buckets_is_refused_with_a_message_saying_why():
    with pytest.raises(ValueError, match="at least 1, got 0"):
        jump_hash(5, 0)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        jump_hash_many(np.array([5], dtype=np.uint64), 0)
