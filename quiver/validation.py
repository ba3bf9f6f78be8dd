"""Checks on points and queries before anything is written or searched; each failure says what to fix.

Shared by the router (which checks before fanning out, so no shard takes half a bad batch) and the shard.
"""
from __future__ import annotations

import numpy as np

from quiver.errors import InvalidArgument

MAX_ID_BYTES = 256
# On the shards, a keyed collection's point is stored under a (partition key, id) pair: room for the key too.
MAX_STORED_ID_BYTES = MAX_ID_BYTES + 4 * 128 + 8


def check_ids(ids: list[str], *, allow_duplicates: bool = False, max_bytes: int = MAX_ID_BYTES) -> None:
    for position, point_id in enumerate(ids):
        if not point_id:
            raise InvalidArgument(f"ids[{position}] is empty; point ids must be 1..{max_bytes} bytes of UTF-8")
        size = len(point_id.encode("utf-8"))
        if size > max_bytes:
            raise InvalidArgument(f"ids[{position}] is {size} bytes; point ids may be at most {max_bytes} bytes")
    if not allow_duplicates and len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidArgument(f"id {dup!r} appears more than once in one batch; send each id once")


def check_vectors(vectors: np.ndarray, metric: str, what: str = "vectors") -> np.ndarray | None:
    """Refuses NaN/Inf, and zero vectors under cosine. Returns the row norms under cosine, else None."""
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidArgument(f"{what}[{row}] contains NaN or infinite values")
    if metric != "cosine":
        return None
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)  # float32 would overflow/underflow at 1e±20
    zero = norms == 0
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise InvalidArgument(f"{what}[{row}] is a zero vector, which has no direction under the cosine metric")
    return norms


def prepare_vectors(vectors: np.ndarray, metric: str, what: str = "vectors") -> np.ndarray:
    """check_vectors, then a C-contiguous float32 copy, normalised under cosine."""
    norms = check_vectors(vectors, metric, what)
    if norms is None:
        return np.array(vectors, dtype=np.float32, order="C", copy=True)
    return np.ascontiguousarray(vectors.astype(np.float64) / norms[:, None], dtype=np.float32)


def check_k(k: int, max_k: int) -> None:
    if k <= 0:
        raise InvalidArgument("k must be at least 1")
    if k > max_k:
        raise InvalidArgument(f"k={k} exceeds the server's maximum of {max_k}")
