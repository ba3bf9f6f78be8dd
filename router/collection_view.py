"""What the router needs to know about one collection, taken from the immutable cluster snapshot."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quiver.control_plane.records import CollectionRecord, ServerRecord, ShardMap
from quiver.control_plane.store import ClusterSnapshot
from quiver.errors import FailedPrecondition, NotFound, Unavailable


@dataclass(frozen=True)
class CollectionView:
    record: CollectionRecord
    shard_map: ShardMap
    servers: Mapping[str, ServerRecord]  # the live ones, by id

    @property
    def version(self) -> int:
        return self.shard_map.version

    def replicas(self, shard: int) -> list[str]:
        """Addresses of the shard's replicas whose servers are live now, in placement order."""
        return [self.servers[r.server_id].address for r in self.shard_map.shards[shard].replicas if r.server_id in self.servers]

    def all_replicas(self, shard: int) -> list[str]:
        """Every replica's address (writes need them all); Unavailable naming the servers that are down."""
        down = [r.server_id for r in self.shard_map.shards[shard].replicas if r.server_id not in self.servers]
        if down:
            raise Unavailable(
                f"shard {shard} of {self.record.name!r}: server(s) {', '.join(down)} holding its replicas are not "
                "registered (down or restarting); retry once they are back"
            )
        return self.replicas(shard)


def collection_view(snapshot: ClusterSnapshot, name: str) -> CollectionView:
    record = snapshot.collections.get(name)
    if record is None:
        raise NotFound(f"collection {name!r} does not exist")
    shard_map = snapshot.active_shard_map(name)
    if shard_map is None or any(r.state != "serving" for p in shard_map.shards for r in p.replicas):
        raise FailedPrecondition(f"collection {name!r} is being created or changed; retry in a moment")
    return CollectionView(record, shard_map, snapshot.servers)


def check_model(view: CollectionView, model: str) -> None:
    """A request that names an embedding model must name the collection's."""
    if model and view.record.model and model != view.record.model:
        raise FailedPrecondition(
            f"collection {view.record.name!r} holds embeddings of model {view.record.model!r}, "
            f"but the request uses {model!r}; embed with the collection's model or use another collection"
        )
