"""shard.columns.grow: a column keeps its rows, its new rows hold the fill, and its spare capacity stays
within an eighth of it (a doubled column would hold up to as much spare as used)."""
from __future__ import annotations

import numpy as np
import pytest

from shard.columns import grow, grown_capacity


@pytest.mark.parametrize(("fill", "dtype"), [(-1, np.int32), (np.nan, np.float64), (0, np.int64), (0, np.int8)])
def test_a_grown_column_keeps_its_rows_and_fills_the_new_ones(fill, dtype) -> None:
    column = np.arange(100).astype(dtype)
    grown = grow(column, 101, fill, 16)
    assert grown.dtype == column.dtype and len(grown) >= 101
    assert np.array_equal(grown[:100], column)
    assert np.array_equal(grown[100:], np.full(len(grown) - 100, fill, dtype=dtype), equal_nan=True)


def test_a_column_that_holds_enough_rows_is_returned_as_is() -> None:
    column = np.zeros(10)
    assert grow(column, 10, 0, 16) is column


def test_growing_one_row_at_a_time_keeps_the_spare_capacity_within_an_eighth() -> None:
    column, copies = np.zeros(0, dtype=np.int32), 0
    for needed in range(1, 200_000, 97):
        grown = grow(column, needed, -1, 1024)
        copies += grown is not column
        column = grown
        assert len(column) <= max(1024, needed + needed // 8 + 1)
    assert copies < 60  # still geometric: a copy per eighth of growth, not per row


def test_a_jump_past_the_growth_step_grows_to_exactly_what_is_needed() -> None:
    assert grown_capacity(1000, 5000, 16) == 5000
    assert grown_capacity(1000, 1001, 16) == 1125
    assert grown_capacity(0, 1, 16) == 16
