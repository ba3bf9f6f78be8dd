"""Packed vectors of the wrong size are refused in the caller's terms: dimensions, not bytes."""
from __future__ import annotations

import numpy as np
import pytest

from quiver.errors import InvalidArgument
from quiver.wire.points import vectors_from_bytes


def test_rows_of_another_dimension_are_named_by_their_dimension():
    with pytest.raises(InvalidArgument, match=r"got 2 vector\(s\) of dimension 7, but the collection's dimension is 8"):
        vectors_from_bytes(np.ones(14, "<f4").tobytes(), 8, 2, "vectors")


def test_a_query_of_another_dimension_is_named_by_its_dimension():
    with pytest.raises(InvalidArgument, match="got 7 float32 values.*dimension 8.*a single vector of dimension 7"):
        vectors_from_bytes(np.ones(7, "<f4").tobytes(), 8, None, "queries")


def test_bytes_that_are_not_float32_values_say_how_to_pack_them():
    with pytest.raises(InvalidArgument, match="3 bytes is not a whole number of float32 values"):
        vectors_from_bytes(b"abc", 8, None, "queries")


def test_whole_rows_are_accepted():
    rows = vectors_from_bytes(np.arange(16, dtype="<f4").tobytes(), 8, 2, "vectors")
    assert rows.shape == (2, 8) and rows[1, 0] == 8
