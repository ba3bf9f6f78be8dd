"""Each partition's figures as Prometheus gauges, read from the partitions when /metrics is scraped.

Read at scrape time rather than kept up to date on every write: the figures are already counted by the
partitions (their Stats), so a scrape costs one short read lock per partition and writes pay nothing.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from shard.partition_registry import PartitionRegistry

_log = logging.getLogger(__name__)

# (metric name, help, key in DurablePartition._stats)
_GAUGES = (
    ("quiver_shard_partition_points", "Live points in the partition.", "point_count"),
    ("quiver_shard_partition_deleted_points", "Deleted points whose slots are not reused yet.", "deleted_count"),
    ("quiver_shard_partition_index_bytes", "Memory of the partition's vector index.", "index_memory_bytes"),
    ("quiver_shard_partition_metadata_bytes", "Memory of the partition's metadata, field index and id map.", "metadata_memory_bytes"),
    ("quiver_shard_partition_wal_bytes", "Bytes in the partition's write-ahead log.", "wal_bytes"),
    ("quiver_shard_partition_last_snapshot_timestamp_seconds", "When the partition last wrote a snapshot (Unix time; 0: never).", "last_snapshot_unix"),
    ("quiver_shard_partition_last_lsn", "The partition's last logged sequence number.", "last_lsn"),
    ("quiver_shard_partition_searches", "Searches the partition has answered since the server started.", "searches_served"),
    ("quiver_shard_partition_list_compactions", "Times an IVF-PQ partition copied its lists to their exact size since the server started.", "list_compactions"),
)
_LABELS = ["server", "collection", "shard", "version"]


class _PartitionCollector(Collector):
    """One per process, over every shard server started in it (one in production; several in tests)."""

    def __init__(self) -> None:
        self.served: dict[int, tuple[PartitionRegistry, str]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {key: GaugeMetricFamily(name, text, labels=_LABELS) for name, text, key in _GAUGES}
        read_only = GaugeMetricFamily(
            "quiver_shard_partition_read_only", "1 while the partition refuses writes (disk full, WAL I/O error).", labels=_LABELS
        )
        failed = GaugeMetricFamily(
            "quiver_shard_failed_partitions", "Partitions found on disk that could not be opened (not served).", labels=["server"]
        )
        for registry, server_id in list(self.served.values()):
            self._add(registry, server_id, families, read_only)
            failed.add_metric([server_id], float(len(registry.failed)))
        yield from families.values()
        yield read_only
        yield failed

    @staticmethod
    def _add(registry: PartitionRegistry, server_id: str, families: dict[str, GaugeMetricFamily], read_only: GaugeMetricFamily) -> None:
        for partition in registry.all():
            try:
                stats = partition._stats()
            except Exception:  # noqa: BLE001 - a partition closing under the scrape is left out, not an error page
                _log.debug("partition %s left out of this scrape", partition.spec.key, exc_info=True)
                continue
            key = partition.spec.key
            labels = [server_id, key.collection, str(key.shard), str(key.version)]
            for stat, family in families.items():
                family.add_metric(labels, float(stats[stat] or 0))
            read_only.add_metric(labels, 0.0 if stats["write_state"] == "ok" else 1.0)


_COLLECTOR: _PartitionCollector | None = None


def watch(registry: PartitionRegistry, server_id: str) -> None:
    """Include `registry`'s partitions in this process's /metrics until `unwatch`."""
    global _COLLECTOR
    if _COLLECTOR is None:
        _COLLECTOR = _PartitionCollector()
        REGISTRY.register(_COLLECTOR)
    _COLLECTOR.served[id(registry)] = (registry, server_id)


def unwatch(registry: PartitionRegistry) -> None:
    if _COLLECTOR is not None:
        _COLLECTOR.served.pop(id(registry), None)
