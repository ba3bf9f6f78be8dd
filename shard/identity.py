"""A shard server's identity: a server id created on its first start and kept in its data directory.

The cluster names servers by id, never by address (shard maps list server ids; addresses come from the
servers' live lease records), so a server that comes back on another port or host with the same data
directory is the same server. A start that asks for an id other than the one its data directory holds
is refused: two ids for one set of partitions, or one id for two, would corrupt the shard maps.
"""
from __future__ import annotations

import socket
import uuid
from pathlib import Path

from quiver.control_plane.keys import check_segment
from shard.storage import OS_STORAGE, Storage, write_file_atomically

ID_FILE = "server_id"


class ServerIdMismatch(Exception):
    """The data directory belongs to another server id than the one asked for."""


def resolve_server_id(data_dir: Path, requested: str = "", storage: Storage = OS_STORAGE) -> str:
    """The id stored in `data_dir`, or (first start) `requested` or a new one, stored durably."""
    path = data_dir / ID_FILE
    if storage.exists(path):
        with storage.open_read(path) as f:
            stored = f.read().decode("utf-8").strip()
        if requested and requested != stored:
            raise ServerIdMismatch(
                f"data directory {data_dir} belongs to server id {stored!r}, not {requested!r}: "
                f"start with --server-id {stored} (or none), or give this id another data directory"
            )
        return stored
    server_id = check_segment("server id", requested or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}")
    storage.make_dirs(data_dir)
    write_file_atomically(storage, path, server_id.encode("utf-8") + b"\n")
    return server_id
