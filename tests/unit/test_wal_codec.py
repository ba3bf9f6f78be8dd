"""WAL records decode to exactly what was encoded: ids, vectors bit for bit, metadata with string lists as
tuples (the type the field index and readers get from the wire), and deletes; anything else is refused."""
from __future__ import annotations

import numpy as np
import pytest

from shard.wal_codec import DeleteRecord, UpsertRecord, decode, encode


def test_an_upsert_round_trips_with_its_vectors_bit_for_bit_and_list_metadata_as_tuples() -> None:
    vectors = np.array([[0.1, -2.5, np.float32(1e-38)], [3.0, 0.0, -0.0]], dtype=np.float32)
    metadata = [{"tags": ("a", "b"), "n": 3, "s": "x", "f": 1.5, "ok": True}, {}]
    record = decode(encode(UpsertRecord(["p1", "p2"], vectors, metadata)))
    assert isinstance(record, UpsertRecord)
    assert record.ids == ["p1", "p2"]
    assert record.vectors.tobytes() == vectors.tobytes()
    assert record.metadata == metadata
    assert isinstance(record.metadata[0]["tags"], tuple)


def test_a_delete_round_trips_and_an_unknown_tag_is_refused_naming_it() -> None:
    assert decode(encode(DeleteRecord(["a", "é", ""]))) == DeleteRecord(["a", "é", ""])
    with pytest.raises(ValueError, match=r"unknown WAL record tag b'\\x7f'"):
        decode(b"\x7f{}")
