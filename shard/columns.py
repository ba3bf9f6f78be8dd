"""Growing the label-indexed numpy columns a partition keeps (id map, metadata fields, IVF list numbers).

Why not doubling: a column that grows by doubling has, just past a power of two, nearly as much capacity
unused as used, and a column filled with a sentinel (-1, NaN) has its unused tail written, so resident.
At 10M labels that is a 16.7M-row column: two thirds more memory than the points need. Growing by an
eighth bounds the unused tail to an eighth of the column, for about nine copies of each row over the
column's life (a memcpy, cheap beside the write that caused it). A zero fill is allocated by calloc, so
its tail is not even resident until written.
"""
from __future__ import annotations

import numpy as np

GROWTH_DIVISOR = 8  # grow by an eighth of the current capacity


def grown_capacity(current: int, needed: int, minimum: int) -> int:
    """The capacity to grow a column of `current` rows to, so that it holds `needed` rows."""
    return max(needed, current + current // GROWTH_DIVISOR, minimum)


def grow(array: np.ndarray, needed: int, fill: object, minimum: int) -> np.ndarray:
    """`array` if it already holds `needed` rows, else a longer copy whose new rows hold `fill`."""
    if needed <= len(array):
        return array
    capacity = grown_capacity(len(array), needed, minimum)
    if fill == 0:
        out = np.zeros(capacity, dtype=array.dtype)
    else:
        out = np.full(capacity, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out
