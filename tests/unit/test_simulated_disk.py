"""The simulated disk keeps exactly what a real one promises after a power cut, and no more."""
from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from tests.simulated_disk import PowerLost, SimulatedDisk

D = Path("/data")


def written(disk: SimulatedDisk, path: Path, data: bytes, *, fsync: bool) -> None:
    f = disk.create(path)
    f.write(data)
    if fsync:
        f.fsync()
    f.close()


def test_fsynced_data_under_a_synced_name_survives_and_unsynced_data_does_not() -> None:
    disk = SimulatedDisk()
    disk.make_dirs(D)
    written(disk, D / "a", b"kept", fsync=True)
    written(disk, D / "b", b"lost", fsync=False)
    disk.fsync_dir(D)
    f = disk.open_append(D / "a")
    f.write(b" and not this")
    after = disk.power_loss()
    assert after.open_read(D / "a").read() == b"kept"
    assert after.size(D / "b") == 0


def test_a_created_or_renamed_name_is_lost_until_its_directory_is_fsynced() -> None:
    disk = SimulatedDisk()
    disk.make_dirs(D)
    written(disk, D / "old", b"1", fsync=True)
    disk.fsync_dir(D)
    written(disk, D / "tmp", b"2", fsync=True)
    disk.replace(D / "tmp", D / "new")
    disk.unlink(D / "old")
    assert disk.power_loss().list_dir(D) == ["old"]
    disk.fsync_dir(D)
    after = disk.power_loss()
    assert after.list_dir(D) == ["new"]
    assert after.open_read(D / "new").read() == b"2"


def test_make_dirs_is_durable_but_a_bare_directory_entry_is_not() -> None:
    disk = SimulatedDisk()
    disk.make_dirs(D / "x" / "y")
    assert disk.power_loss().exists(D / "x" / "y")
    disk._op("mkdir", D / "z", lambda: disk._dirs.add(D / "z"))  # a mkdir whose parent is never fsynced
    written(disk, D / "z" / "f", b"data", fsync=True)
    disk.fsync_dir(D / "z")
    after = disk.power_loss()
    assert not after.exists(D / "z")
    assert not after.exists(D / "z" / "f")


def test_a_torn_append_keeps_a_prefix_of_the_unsynced_bytes_after_the_synced_ones() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(50):
        disk = SimulatedDisk()
        disk.make_dirs(D)
        written(disk, D / "log", b"S" * 10, fsync=True)
        disk.fsync_dir(D)
        disk.open_append(D / "log").write(b"U" * 2000)
        data = disk.power_loss(rng).open_read(D / "log").read()
        assert data[:10] == b"S" * 10 and len(data) <= 2010
        assert set(data[10:]) <= {ord("U"), 0}
        seen.add(len(data))
    assert len(seen) > 10  # the tear lands in many places


def test_crash_after_n_mutations_freezes_the_durable_view_and_fails_everything_after() -> None:
    disk = SimulatedDisk()
    disk.make_dirs(D)
    written(disk, D / "a", b"1", fsync=True)
    disk.fsync_dir(D)
    disk.crash_after(2)  # the create succeeds, its write is the crash point
    with pytest.raises(PowerLost):
        written(disk, D / "b", b"2", fsync=True)
    with pytest.raises(PowerLost):
        disk.list_dir(D)
    assert disk.power_loss().list_dir(D) == ["a"]


def test_injected_faults_hit_only_matching_operations_the_given_number_of_times() -> None:
    disk = SimulatedDisk()
    disk.make_dirs(D)
    f = disk.create(D / "wal-1")
    disk.fail("fsync", "wal", errno.ENOSPC, times=1)
    f.write(b"x")
    with pytest.raises(OSError) as raised:
        f.fsync()
    assert raised.value.errno == errno.ENOSPC
    f.fsync()
    assert disk.counts["fsync"] == 1
