"""Write-ahead log: round trips, torn-tail recovery, corruption detection, rotation and segment dropping."""
from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shard.wal import CorruptLog, WriteAheadLog

HEADER_BYTES = struct.calcsize("<IIQ")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def fill(wal: WriteAheadLog, batches: int, per_batch: int = 3, size: int = 40) -> list[bytes]:
    written = []
    for b in range(batches):
        batch = [bytes([b, i]) * (size // 2) for i in range(per_batch)]
        wal.append_batch(batch)
        written += batch
    return written


def test_round_trip_across_several_segments(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        written = fill(wal, batches=10)
        assert wal.last_lsn == 30
        assert wal.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))
    assert len(segments(tmp_path)) > 2
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        assert wal.last_lsn == 30
        assert list(wal.replay(0)) == list(enumerate(written, start=1))


def test_segments_are_named_by_their_first_lsn_and_never_split_a_batch(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
        firsts = [int(p.name[4:24]) for p in segments(tmp_path)]
    assert firsts[0] == 1
    assert all((first - 1) % 3 == 0 for first in firsts)  # every batch has three records


def test_append_batch_returns_consecutive_lsns(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.append_batch([b"a", b"b"]) == [1, 2]
        assert wal.append_batch([]) == []
        assert wal.append_batch([b""]) == [3]
        assert list(wal.replay(0)) == [(1, b"a"), (2, b"b"), (3, b"")]


def test_replay_yields_only_records_after_the_given_lsn(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        written = fill(wal, batches=10)
        for after in (*range(0, 32), 99):  # every position: a segment's first, middle and last record
            assert list(wal.replay(after)) == list(enumerate(written, start=1))[after:]


def test_empty_log_starts_at_lsn_one(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "new") as wal:
        assert wal.last_lsn == 0
        assert list(wal.replay(0)) == []
        assert wal.append_batch([b"x"]) == [1]


def test_torn_tail_record_is_truncated_and_later_appends_continue(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"one", b"two"])
        wal.append_batch([b"three" * 10])
    last = segments(tmp_path)[-1]
    good_size = 2 * HEADER_BYTES + 6
    with open(last, "r+b") as f:
        f.truncate(good_size + HEADER_BYTES + 7)  # cut in the middle of the third record's payload
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.last_lsn == 2
        assert last.stat().st_size == good_size
        assert wal.append_batch([b"four"]) == [3]
    with WriteAheadLog.open(tmp_path) as wal:
        assert list(wal.replay(0)) == [(1, b"one"), (2, b"two"), (3, b"four")]


@pytest.mark.parametrize("tail", [b"\x00" * 100, b"\xff" * 3, b"garbage that is not a record at all"])
def test_garbage_tail_is_dropped_and_appends_continue(tmp_path: Path, tail: bytes) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"one", b"two"])
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(tail)
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.last_lsn == 2
        assert wal.append_batch([b"three"]) == [3]
        assert [p for _, p in wal.replay(0)] == [b"one", b"two", b"three"]


def test_crc_mismatch_in_last_segment_drops_it_and_what_follows(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"one", b"two", b"three"])
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[2 * HEADER_BYTES + 3 + 1] ^= 0x01  # a byte of the second payload
    last.write_bytes(bytes(data))
    with WriteAheadLog.open(tmp_path) as wal:
        assert list(wal.replay(0)) == [(1, b"one")]


def test_crc_corruption_in_an_earlier_segment_raises_corrupt_log(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[HEADER_BYTES + 70] ^= 0x01  # inside the second record's payload
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=rf"{first.name}.*offset {HEADER_BYTES + 40}"):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


def test_crc_corruption_in_the_segment_before_the_last_raises_corrupt_log(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
    second_to_last = segments(tmp_path)[-2]
    data = bytearray(second_to_last.read_bytes())
    data[HEADER_BYTES + 5] ^= 0x01  # inside its first record's payload: no crash tears a segment that was rolled
    second_to_last.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=second_to_last.name):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


def test_torn_record_in_an_earlier_segment_raises_corrupt_log(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
    first = segments(tmp_path)[0]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size - 1)
    with pytest.raises(CorruptLog, match=first.name):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


def test_missing_middle_segment_is_an_lsn_gap_and_raises_corrupt_log(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
    files = segments(tmp_path)
    files[1].unlink()
    with pytest.raises(CorruptLog, match=files[2].name):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


def test_record_with_an_out_of_sequence_lsn_raises_corrupt_log(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        fill(wal, batches=10)
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    struct.pack_into("<Q", data, 8, 5)  # first record claims lsn 5
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="lsn 5"):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


def test_rotate_starts_a_new_segment_and_returns_the_next_lsn(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"a", b"b"])
        assert wal.rotate() == 3
        assert wal.rotate() == 3  # rotating an empty segment creates no second file
        assert [p.name for p in segments(tmp_path)] == [f"wal-{1:020d}.log", f"wal-{3:020d}.log"]
        assert wal.append_batch([b"c"]) == [3]
    with WriteAheadLog.open(tmp_path) as wal:
        assert list(wal.replay(0)) == [(1, b"a"), (2, b"b"), (3, b"c")]


def test_reopen_after_rotate_with_empty_last_segment_keeps_last_lsn(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"a", b"b"])
        wal.rotate()
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.last_lsn == 2
        assert wal.append_batch([b"c"]) == [3]


def test_drop_segments_before_removes_only_wholly_older_segments(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"1", b"2"])
        wal.rotate()
        wal.append_batch([b"3", b"4"])
        wal.rotate()
        wal.append_batch([b"5"])
        assert wal.drop_segments_before(3) == 1  # segment [1, 2] goes; [3, 4] holds lsn 3 and stays
        assert wal.drop_segments_before(3) == 0
        assert [lsn for lsn, _ in wal.replay(0)] == [3, 4, 5]
        assert wal.drop_segments_before(100) == 1  # never the active segment
        assert [lsn for lsn, _ in wal.replay(0)] == [5]
        assert wal.size_bytes == sum(p.stat().st_size for p in segments(tmp_path))
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.last_lsn == 5
        assert wal.append_batch([b"6"]) == [6]


def test_snapshot_then_drop_recovers_from_snapshot_lsn(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"1", b"2", b"3"])
        snapshot_lsn = wal.rotate() - 1
        wal.append_batch([b"4"])
        wal.drop_segments_before(snapshot_lsn + 1)
    with WriteAheadLog.open(tmp_path, start_lsn=snapshot_lsn) as wal:
        assert list(wal.replay(snapshot_lsn)) == [(4, b"4")]


def test_start_lsn_numbers_the_first_record_of_an_empty_directory(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, start_lsn=41) as wal:
        assert wal.last_lsn == 41
        assert list(wal.replay(0)) == []
        assert wal.append_batch([b"x"]) == [42]
    with WriteAheadLog.open(tmp_path) as wal:
        assert list(wal.replay(0)) == [(42, b"x")]


def test_start_lsn_is_ignored_when_the_log_is_already_past_it(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"a", b"b", b"c"])
    with WriteAheadLog.open(tmp_path, start_lsn=2) as wal:
        assert wal.last_lsn == 3
        assert wal.append_batch([b"d"]) == [4]


def test_start_lsn_past_the_log_continues_from_it_in_a_fresh_segment(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_batch([b"a", b"b"])
    with WriteAheadLog.open(tmp_path, start_lsn=10) as wal:
        assert wal.last_lsn == 10
        assert wal.append_batch([b"k"]) == [11]
    assert [p.name for p in segments(tmp_path)] == [f"wal-{11:020d}.log"]
    with WriteAheadLog.open(tmp_path) as wal:  # no lsn gap is left behind for the next open
        assert list(wal.replay(0)) == [(11, b"k")]


def test_closed_log_refuses_appends(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.close()
    with pytest.raises(RuntimeError):
        wal.append_batch([b"x"])


def record_bytes(lsn: int, payload: bytes) -> bytes:
    """A record as the module docstring specifies it: `<IIQ` (length, crc32 over LSN bytes + payload, LSN)."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Q", lsn)))
    return struct.pack("<IIQ", len(payload), crc, lsn) + payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(st.binary(max_size=60), min_size=1, max_size=5), min_size=1, max_size=12),
    cut_fraction=st.floats(min_value=0, max_value=1),
    garbage=st.binary(max_size=40),
)
# Garbage that rewrites exactly the bytes that were cut makes the record whole again, and the WAL must keep
# it: cut in the payload, cut in the header, a whole record rewritten with garbage after it. A copy one byte
# off is not the record, and is dropped; so is a payload rewritten with other bytes of the same length.
@example(batches=[[b"a"]], cut_fraction=0.95, garbage=b"a")
@example(batches=[[b"a"]], cut_fraction=0.5, garbage=record_bytes(1, b"a")[8:])
@example(batches=[[b"a", b"bc"]], cut_fraction=0.5, garbage=record_bytes(2, b"bc") + b"\x00\x01")
@example(batches=[[b"a", b"bc"]], cut_fraction=0.5, garbage=record_bytes(2, b"bc")[1:])
@example(batches=[[b"ab"]], cut_fraction=0.95, garbage=b"x")
def test_replay_after_a_torn_last_segment_is_exactly_the_fully_written_prefix(
    batches: list[list[bytes]], cut_fraction: float, garbage: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        appended = []
        with WriteAheadLog.open(directory, segment_bytes=200) as wal:
            for batch in batches:
                wal.append_batch(batch)
                appended += batch
        last = segments(directory)[-1]
        first_lsn = int(last.name[4:24])
        original = last.read_bytes()
        cut = int(len(original) * cut_fraction)
        with open(last, "r+b") as f:
            f.truncate(cut)
            f.seek(cut)
            f.write(garbage)
        torn = original[:cut] + garbage
        assert last.read_bytes() == torn

        # Records of earlier segments all survive; in the last one, each whose whole encoding is still in
        # place in the torn file, up to the first that is not (garbage may rewrite bytes that were cut).
        survivors = first_lsn - 1
        offset = 0
        for lsn, payload in enumerate(appended[first_lsn - 1:], start=first_lsn):
            encoded = record_bytes(lsn, payload)
            assert original[offset:offset + len(encoded)] == encoded
            if torn[offset:offset + len(encoded)] != encoded:
                break
            survivors += 1
            offset += len(encoded)

        with WriteAheadLog.open(directory, segment_bytes=200) as wal:
            assert [p for _, p in wal.replay(0)] == appended[:survivors]
            assert wal.last_lsn == survivors
            assert wal.append_batch([b"after"]) == [survivors + 1]
        with WriteAheadLog.open(directory, segment_bytes=200) as wal:
            assert [p for _, p in wal.replay(0)] == appended[:survivors] + [b"after"]
