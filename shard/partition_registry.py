"""The partitions a shard server holds, on disk under `data_dir/partitions/<collection>/<shard>/<version>`.

Creating is idempotent when the spec is identical (the router may retry), and refused when it differs.
Start-up reopens every partition directory found, so a restarted server serves what it held.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import shutil
from pathlib import Path
from typing import Awaitable, Callable

from quiver.errors import AlreadyExists, InvalidArgument, PartitionMissing
from quiver.specs import INDEX_KINDS, MAX_DIM, METRICS, PartitionKey, PartitionSpec
from shard.durable_partition import SPEC_FILE, DurabilityPolicy, DurablePartition
from shard.executors import ShardExecutors
from shard.partition_state import SearchPolicy

_log = logging.getLogger(__name__)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_collection_name(name: str) -> None:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection name {name!r} is invalid: use 1-128 characters from letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )


def check_spec(spec: PartitionSpec) -> None:
    check_collection_name(spec.key.collection)
    if not 1 <= spec.dim <= MAX_DIM:
        raise InvalidArgument(f"dim must be between 1 and {MAX_DIM}, got {spec.dim}")
    if spec.metric not in METRICS:
        raise InvalidArgument(f"metric must be one of {METRICS}, got {spec.metric!r}")
    if spec.index_kind not in INDEX_KINDS:
        raise InvalidArgument(f"index kind must be one of {INDEX_KINDS}, got {spec.index_kind!r}")


class PartitionRegistry:
    def __init__(
        self, data_dir: Path, durability: DurabilityPolicy, search_policy: SearchPolicy, *, server_id: str = "",
        on_fault_change: Callable[[], None] | None = None, executors: ShardExecutors | None = None,
    ) -> None:
        self._root = data_dir / "partitions"
        self._durability = durability
        self._search_policy = search_policy
        self._server_id = server_id
        self._executors = executors
        # Called when a partition starts or stops refusing writes (disk full, read-only), and on a drop.
        self._on_fault_change = on_fault_change
        self._partitions: dict[PartitionKey, DurablePartition] = {}
        self.on_created: Callable[[], Awaitable[None]] | None = None  # e.g. start replicating a new partition
        # Partitions found on disk that could not be opened: directory -> why (health and metrics show them).
        self.failed: dict[Path, str] = {}
        self._lock = asyncio.Lock()

    def _directory(self, key: PartitionKey) -> Path:
        return self._root / key.collection / f"shard-{key.shard:05d}" / f"v{key.version:06d}"

    async def open_all(self) -> None:
        spec_files = sorted(self._root.glob(f"*/shard-*/v*/{SPEC_FILE}")) if self._root.exists() else []
        for spec_file in spec_files:
            try:
                partition = await asyncio.to_thread(
                    functools.partial(DurablePartition.open, spec_file.parent, self._durability, self._search_policy,
                                      server_id=self._server_id, executors=self._executors))
            except Exception as error:  # noqa: BLE001 - one damaged partition must not keep the others offline
                _log.exception("partition in %s could not be recovered; it is not served (its files are kept)", spec_file.parent)
                self.failed[spec_file.parent] = f"{type(error).__name__}: {error}"
                continue
            self._serve(partition)

    async def create(self, spec: PartitionSpec) -> bool:
        check_spec(spec)
        async with self._lock:
            existing = self._partitions.get(spec.key)
            if existing is not None:
                if existing.spec == spec:
                    return False
                raise AlreadyExists(f"partition {spec.key} already exists with a different definition")
            directory = self._directory(spec.key)
            if directory.exists():
                # Left by a drop that did not finish (crash mid-delete): never inherit its log.
                _log.warning("removing stale partition directory %s", directory)
                await asyncio.to_thread(shutil.rmtree, directory)
            partition = await asyncio.to_thread(
                functools.partial(DurablePartition.create, directory, spec, self._durability, self._search_policy,
                                  server_id=self._server_id, executors=self._executors))
            self._serve(partition)
        if self.on_created is not None:
            await self.on_created()
        return True

    async def rebuild(self, key: PartitionKey, change_files: Callable[[Path], object]) -> DurablePartition:
        """Close a partition, change its files with `change_files(directory)` (in a thread), and open it again
        from them: how a replica drops a log tail its primary lacks, or takes its primary's snapshot."""
        async with self._lock:
            old = self.get(key)
            del self._partitions[key]
            await old.close()
            directory = old.directory
            try:
                await asyncio.to_thread(change_files, directory)
            finally:
                partition = await asyncio.to_thread(
                    functools.partial(DurablePartition.open, directory, self._durability, self._search_policy,
                                      server_id=self._server_id, executors=self._executors))
                self._serve(partition)
        return partition

    @property
    def durability(self) -> DurabilityPolicy:
        return self._durability

    def _serve(self, partition: DurablePartition) -> None:
        partition.on_fault_change = lambda _: self._fault_changed()
        partition.start()
        self._partitions[partition.spec.key] = partition

    def _fault_changed(self) -> None:
        if self._on_fault_change is not None:
            self._on_fault_change()

    def faults(self) -> list[DurablePartition]:
        """The partitions that refuse writes now."""
        return [p for p in self.all() if p.fault is not None]

    async def drop(self, key: PartitionKey) -> None:
        # Under the lock, so a create of the same key waits until the old directory is gone.
        async with self._lock:
            partition = self.get(key)
            del self._partitions[key]
            await partition.destroy()
        if partition.fault is not None:
            self._fault_changed()

    def get(self, key: PartitionKey) -> DurablePartition:
        try:
            return self._partitions[key]
        except KeyError:
            raise PartitionMissing(f"partition {key} does not exist on this shard server") from None

    def all(self) -> list[DurablePartition]:
        return [self._partitions[key] for key in sorted(self._partitions)]

    async def close_all(self, *, snapshot: bool) -> None:
        for partition in list(self._partitions.values()):
            try:
                await partition.close(snapshot=snapshot)
            except Exception:  # noqa: BLE001 - keep closing the others; the WAL still holds their writes
                _log.exception("closing partition %s failed", partition.spec.key)
