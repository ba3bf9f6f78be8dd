"""The seal a cutover puts on the old version's primaries: writes refused from the seal on, and the seal
answered only once the writes that passed before it have ended."""
from __future__ import annotations

import asyncio
import time

import pytest

from quiver.errors import DeadlineExceeded, Unavailable
from quiver.specs import PartitionKey
from shard.write_seals import WriteSeals

KEY = PartitionKey("docs", 0, 1)
OTHER = PartitionKey("docs", 1, 1)


async def test_the_seal_waits_for_writes_that_passed_before_it_and_refuses_later_ones() -> None:
    seals = WriteSeals()
    with seals.writing(KEY):
        seals.seal(KEY, "cutover of docs to v2")
        drained = asyncio.ensure_future(seals.drained(KEY, None))
        await asyncio.sleep(0.02)
        assert not drained.done(), "answered while a write begun before the seal was still going"
        with pytest.raises(Unavailable, match="sealed against writes: cutover of docs to v2; nothing was applied"):
            with seals.writing(KEY):
                pass
        with seals.writing(OTHER):  # other partitions are not sealed
            pass
    await asyncio.wait_for(drained, 1)


async def test_a_lifted_seal_lets_writes_through_again_and_a_stuck_write_fails_the_wait_at_its_deadline() -> None:
    seals = WriteSeals()
    seals.seal(KEY, "cutover")
    seals.lift(KEY)
    with seals.writing(KEY):
        seals.seal(KEY, "cutover")
        with pytest.raises(DeadlineExceeded):
            await seals.drained(KEY, time.monotonic() + 0.02)
    await seals.drained(KEY, time.monotonic() + 0.02)


def test_a_seal_lapses_by_itself_after_its_time_to_live() -> None:
    """A router that dies between sealing and switching must not leave the version refusing writes for good."""
    now = [100.0]
    seals = WriteSeals(clock=lambda: now[0])
    seals.seal(KEY, "cutover", ttl_s=30.0)
    now[0] = 129.9
    with pytest.raises(Unavailable):
        with seals.writing(KEY):
            pass
    now[0] = 130.0
    with seals.writing(KEY):
        pass
    assert not seals.sealed(KEY)


def test_a_reindex_write_passes_a_seal() -> None:
    seals = WriteSeals()
    seals.seal(KEY, "cutover")
    with seals.writing(KEY, past_seal=True):
        pass
