"""Which shard a point id (or partition key) belongs to: jump consistent hash over a stable 64-bit hash.

Jump consistent hash (John Lamping and Eric Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm",
2014) maps a 64-bit key to a bucket in [0, n). It suits shards numbered 0..n-1:
- no ring state: nothing to build, store in etcd or keep in sync between routers; the shard count is all;
- minimal movement: growing from n to n+1 shards moves only ~1/(n+1) of the keys, and only into the new shard;
- perfectly even in expectation, without the virtual nodes a ring needs to balance.
Its limit is that buckets can only be added or removed at the end, which is how shards are numbered here.

The key must be hashed to 64 bits first with a hash that is identical in every process and Python version:
`blake2b` with an 8-byte digest read little-endian, never Python's salted `hash()`. The hash is a parameter
so tests and future formats can swap it.

Why not a library: `jump-consistent-hash` (PyPI, MIT, C extension with a pure-Python fallback) is maintained
and computes the same function, but it maps one key per call and the algorithm is eight lines; the numpy
variant below, which routes a whole upsert batch at once, has to exist here anyway. Both versions are
checked against the reference algorithm's outputs in tests/unit/test_hashring.py.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

_MASK64 = (1 << 64) - 1
_LCG_MULTIPLIER = 2862933555777941757


def blake2b_64(data: bytes) -> int:
    """A 64-bit hash of `data` that never changes between processes, machines or Python versions."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def jump_hash(key: int, num_buckets: int) -> int:
    """Lamping & Veach's jump consistent hash of a 64-bit `key` into [0, num_buckets)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
    key &= _MASK64
    b, j = -1, 0
    while j < num_buckets:
        b = j
        key = (key * _LCG_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_for_key(key: str, num_shards: int, hash64: Callable[[bytes], int] = blake2b_64) -> int:
    """The shard of a point id or partition key: jump_hash(hash64(utf-8 bytes of key), num_shards)."""
    return jump_hash(hash64(key.encode()), num_shards)


def jump_hash_many(keys: np.ndarray, num_buckets: int) -> np.ndarray:
    """jump_hash over an array of 64-bit keys at once (same results), as int64 bucket numbers."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
    state = np.array(keys, dtype=np.uint64)  # a copy: the LCG advances it in place
    bucket = np.full(state.shape, -1, dtype=np.int64)
    jump = np.zeros(state.shape, dtype=np.int64)
    active = np.arange(state.size)
    # Each round advances only the keys still jumping; about ln(n) + 1 rounds in all.
    while active.size:
        bucket[active] = jump[active]
        state[active] = state[active] * np.uint64(_LCG_MULTIPLIER) + np.uint64(1)  # wraps mod 2**64
        divisor = (state[active] >> np.uint64(33)).astype(np.float64) + 1.0
        jump[active] = ((bucket[active] + 1).astype(np.float64) * (float(1 << 31) / divisor)).astype(np.int64)
        active = active[jump[active] < num_buckets]
    return bucket


def shards_for_keys(
    keys: Sequence[str], num_shards: int, hash64: Callable[[bytes], int] = blake2b_64
) -> np.ndarray:
    """shard_for_key for every key, as an int64 array (hashing stays per key; the jumps are vectorised)."""
    hashes = np.fromiter((hash64(k.encode()) for k in keys), dtype=np.uint64, count=len(keys))
    return jump_hash_many(hashes, num_shards)
