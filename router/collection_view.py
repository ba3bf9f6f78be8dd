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
        """Addresses of the shard's in-sync replicas whose servers are live now, in placement order: the
        ones reads may use (a replica that is catching up may lack acknowledged writes)."""
        placement = self.shard_map.shards[shard]
        return [self.servers[s].address for s in placement.server_ids if s in placement.in_sync_ids and s in self.servers]

    def primary(self, shard: int) -> tuple[str, int]:
        """The address and term of the shard's primary, where every write goes; Unavailable while its server
        is down (until a controller promotes an in-sync replica in a new term)."""
        placement = self.shard_map.shards[shard]
        server = self.servers.get(placement.primary)
        if server is None:
            raise Unavailable(
                f"shard {shard} of {self.record.name!r}: its primary, server {placement.primary} (term {placement.term}), "
                "is not registered (down or restarting); nothing was applied; retry once it is back or a replica is promoted"
            )
        return server.address, placement.term


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
