"""What the router needs to know about one collection, taken from the immutable cluster snapshot."""
from __future__ import annotations

from dataclasses import dataclass

from quiver.control_plane.records import CollectionRecord, ShardMap
from quiver.control_plane.store import ClusterSnapshot
from quiver.errors import FailedPrecondition, NotFound


@dataclass(frozen=True)
class CollectionView:
    record: CollectionRecord
    shard_map: ShardMap

    @property
    def version(self) -> int:
        return self.shard_map.version

    def replicas(self, shard: int) -> list[str]:
        return [r.address for r in self.shard_map.shards[shard].replicas]


def collection_view(snapshot: ClusterSnapshot, name: str) -> CollectionView:
    record = snapshot.collections.get(name)
    if record is None:
        raise NotFound(f"collection {name!r} does not exist")
    shard_map = snapshot.active_shard_map(name)
    if shard_map is None or any(r.state != "serving" for p in shard_map.shards for r in p.replicas):
        raise FailedPrecondition(f"collection {name!r} is being created or changed; retry in a moment")
    return CollectionView(record, shard_map)


def check_model(view: CollectionView, model: str) -> None:
    """A request that names an embedding model must name the collection's."""
    if model and view.record.model and model != view.record.model:
        raise FailedPrecondition(
            f"collection {view.record.name!r} holds embeddings of model {view.record.model!r}, "
            f"but the request uses {model!r}; embed with the collection's model or use another collection"
        )
