"""`quiver-shard --nice N` lowers the whole server's CPU priority, event loop included, so a router sharing
its cores answers (and refuses) first; its worker threads still go lower by their own increments."""
from __future__ import annotations

import os
from pathlib import Path

from quiver.local_cluster import ServerProcess


def _thread_nice_values(pid: int) -> dict[str, int]:
    """Each thread's nice value by its name, read from /proc (field 19 of stat, after the command name)."""
    values: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        values[f"{name}:{tid}"] = int(fields[16])
    return values


def test_nice_flag_lowers_every_thread_of_the_shard_server(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    server = ServerProcess(["-m", "shard", "--data-dir", str(tmp_path / "data"), "--port", "0", "--nice", "4", "--commit-nice", "3"],
                           tmp_path / "shard.log").start()
    try:
        assert server.process is not None
        values = _thread_nice_values(server.process.pid)
        assert len(values) > 1, values
        expected = min(19, base + 4)
        assert all(nice >= expected for nice in values.values()), values
        main_thread = [nice for name, nice in values.items() if name.endswith(f":{server.process.pid}")]
        assert main_thread == [expected]  # the event loop's thread: the flag's increment, no more
    finally:
        server.stop()
