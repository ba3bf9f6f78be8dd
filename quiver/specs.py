"""Plain descriptions of what a partition is, shared by the shard server, the router and the tools."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = ("cosine", "ip", "l2")
INDEX_KINDS = ("hnsw", "ivf_pq", "flat")
MAX_DIM = 65_536


@dataclass(frozen=True, order=True)
class PartitionKey:
    collection: str
    shard: int
    version: int

    def __str__(self) -> str:
        return f"{self.collection}/shard-{self.shard}/v{self.version}"


@dataclass(frozen=True)
class PartitionSpec:
    key: PartitionKey
    dim: int
    metric: str = "cosine"
    index_kind: str = "hnsw"
    index_params: dict[str, Any] = field(default_factory=dict)
    model: str = ""

    @property
    def space(self) -> str:
        """The space the index works in: cosine is inner product over normalised vectors."""
        return "l2" if self.metric == "l2" else "ip"

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.key.collection,
            "shard": self.key.shard,
            "version": self.key.version,
            "dim": self.dim,
            "metric": self.metric,
            "index_kind": self.index_kind,
            "index_params": self.index_params,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PartitionSpec":
        return cls(
            PartitionKey(data["collection"], int(data["shard"]), int(data["version"])),
            int(data["dim"]),
            data["metric"],
            data["index_kind"],
            dict(data["index_params"]),
            data.get("model", ""),
        )
