"""Snapshot store: round trips, pruning to `keep`, and falling back past corrupt or torn snapshots."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from shard.snapshot_store import LoadedSnapshot, SnapshotStore

MAGIC = b"QSNAP1\n"


def name(lsn: int) -> str:
    return f"snapshot-{lsn:020d}.qsnap"


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


def header_end(path: Path) -> int:
    (length,) = struct.unpack_from("<I", path.read_bytes(), len(MAGIC))
    return len(MAGIC) + 4 + length


def two_snapshots(tmp_path: Path) -> tuple[SnapshotStore, Path]:
    store = SnapshotStore(tmp_path)
    store.write(5, {"vectors": b"old vectors", "meta": b"old meta"})
    newest = store.write(9, {"vectors": b"new vectors", "meta": b"new meta"})
    return store, newest


def test_round_trip_returns_sections_lsn_and_time(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    before = time.time()
    path = store.write(42, {"vectors": b"\x00\x01" * 1000, "empty": b"", "ids": b"abc"})
    loaded = store.load_newest_valid()
    assert loaded == LoadedSnapshot(42, {"vectors": b"\x00\x01" * 1000, "empty": b"", "ids": b"abc"},
                                    path, loaded.written_unix)
    assert before <= loaded.written_unix <= time.time()
    assert path.name == name(42)
    assert list(loaded.sections) == ["vectors", "empty", "ids"]


def test_file_layout_is_magic_header_bodies_and_sha256(tmp_path: Path) -> None:
    path = SnapshotStore(tmp_path).write(7, {"a": b"xyz", "b": b"12"})
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    end = header_end(path)
    header = json.loads(data[len(MAGIC) + 4:end])
    assert header["version"] == 1 and header["lsn"] == 7
    assert [(s["name"], s["length"]) for s in header["sections"]] == [("a", 3), ("b", 2)]
    assert data[end:-32] == b"xyz12"
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


def test_buffer_sections_larger_than_a_chunk_are_written_without_conversion(tmp_path: Path) -> None:
    vectors = np.arange(600_000, dtype=np.float32).reshape(-1, 4)  # 2.4 MB, several write chunks
    store = SnapshotStore(tmp_path)
    store.write(1, {"vectors": vectors, "tags": bytearray(b"tags")})
    loaded = store.load_newest_valid()
    assert loaded is not None
    assert loaded.sections["vectors"] == vectors.tobytes()
    assert loaded.sections["tags"] == b"tags"


def test_empty_directory_loads_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    assert store.load_newest_valid() is None
    assert store.kept_lsns() == []


def test_newest_snapshot_is_loaded(tmp_path: Path) -> None:
    store, _ = two_snapshots(tmp_path)
    loaded = store.load_newest_valid()
    assert loaded is not None and loaded.lsn == 9
    assert loaded.sections == {"vectors": b"new vectors", "meta": b"new meta"}


def test_write_prunes_to_the_keep_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    for lsn in (3, 8, 12, 20):
        store.write(lsn, {"s": str(lsn).encode()})
    assert store.kept_lsns() == [12, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name(12), name(20)]


def test_keep_one_leaves_a_single_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=1)
    store.write(1, {"s": b"1"})
    store.write(2, {"s": b"2"})
    assert store.kept_lsns() == [2]


@pytest.mark.parametrize(
    "where",
    ["magic", "header_length", "header", "section", "trailer"],
)
def test_flipped_byte_is_detected_set_aside_and_the_older_snapshot_loaded(tmp_path: Path, where: str) -> None:
    store, newest = two_snapshots(tmp_path)
    end = header_end(newest)
    offset = {
        "magic": 0,
        "header_length": len(MAGIC),
        "header": end - 30,  # inside the JSON header
        "section": end + 2,
        "trailer": newest.stat().st_size - 1,
    }[where]
    flip_byte(newest, offset)

    loaded = store.load_newest_valid()

    assert loaded is not None and loaded.lsn == 5
    assert loaded.sections == {"vectors": b"old vectors", "meta": b"old meta"}
    assert not newest.exists()
    assert newest.with_name(newest.name + ".corrupt").exists()
    assert store.kept_lsns() == [5]


def test_header_edit_that_still_parses_is_caught_by_the_trailer(tmp_path: Path) -> None:
    store, newest = two_snapshots(tmp_path)
    data = bytearray(newest.read_bytes())
    digit = data.index(b'"written_unix": ') + len(b'"written_unix": ') + 1
    data[digit] = ord("0") + (data[digit] - ord("0") + 1) % 10  # another valid time, same length
    newest.write_bytes(bytes(data))
    loaded = store.load_newest_valid()
    assert loaded is not None and loaded.lsn == 5


def test_truncated_snapshot_is_detected_and_the_older_one_loaded(tmp_path: Path) -> None:
    store, newest = two_snapshots(tmp_path)
    for size in (newest.stat().st_size - 1, header_end(newest) + 3, 10, 3, 0):
        with open(newest, "r+b") as f:
            f.truncate(size)
        loaded = store.load_newest_valid()
        assert loaded is not None and loaded.lsn == 5
        assert newest.with_name(newest.name + ".corrupt").exists()
        newest.with_name(newest.name + ".corrupt").rename(newest)  # put it back for the next size


def test_all_snapshots_corrupt_loads_nothing(tmp_path: Path) -> None:
    store, _ = two_snapshots(tmp_path)
    for path in tmp_path.glob("*.qsnap"):
        flip_byte(path, path.stat().st_size - 5)
    assert store.load_newest_valid() is None
    assert store.kept_lsns() == []
    assert len(list(tmp_path.glob("*.corrupt"))) == 2


def test_snapshot_whose_header_lsn_disagrees_with_its_name_is_rejected(tmp_path: Path) -> None:
    store, newest = two_snapshots(tmp_path)
    (tmp_path / name(30)).write_bytes(newest.read_bytes())
    loaded = store.load_newest_valid()
    assert loaded is not None and loaded.lsn == 9


def test_leftover_tmp_file_is_ignored_and_removed(tmp_path: Path) -> None:
    store, _ = two_snapshots(tmp_path)
    leftover = tmp_path / (name(99) + ".tmp")
    leftover.write_bytes(MAGIC + b"half a snapsh")
    assert store.kept_lsns() == [5, 9]
    loaded = store.load_newest_valid()
    assert loaded is not None and loaded.lsn == 9
    assert not leftover.exists()


def test_failed_write_leaves_no_tmp_file_and_keeps_old_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = two_snapshots(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.write(12, {"s": b"new"})
    monkeypatch.undo()
    assert store.kept_lsns() == [5, 9]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name(5), name(9)]
