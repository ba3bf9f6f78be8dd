"""What the router needs to know about one collection, taken from the immutable cluster snapshot."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quiver.control_plane import versions
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


def collection_view(snapshot: ClusterSnapshot, name: str, version: int = 0, *, write: bool = False, model: str = "") -> CollectionView:
    """The collection `name` (or the one the alias `name` points at) as its active version serves it, or as version `version` does (0: the active one):
    then the view's record carries that version's spec (shard count, index, model), so routing and model
    checks follow the version asked for. A request naming no version but an embedding model other than the
    active version's goes to the one other version holding that model, if there is exactly one (during a
    model migration, queries of either model keep working); else check_model refuses it."""
    name = snapshot.resolve(name)  # an alias names the collection it points at, as of this snapshot
    record = snapshot.collections.get(name)
    if record is None:
        raise NotFound(f"collection {name!r} does not exist")
    if not version and model and record.model and model != record.model:
        holding = [
            m.version for (n, _), m in snapshot.shard_maps.items()
            if n == name and m.state not in ("retired", "failed") and m.spec is not None and m.spec.model == model
        ]
        if len(holding) == 1:
            version = holding[0]
    if version and version != record.active_version:
        shard_map = snapshot.shard_maps.get((name, version))
        if shard_map is None:
            raise NotFound(f"collection {name!r} has no version {version} (`quiver versions {name}` lists them)")
        if shard_map.state in ("retired", "failed"):
            raise FailedPrecondition(f"collection {name!r} v{version} is {shard_map.state}; it serves no requests")
        if write and shard_map.state == "previous":
            raise FailedPrecondition(f"collection {name!r} v{version} is the previous version; writes go to the active v{record.active_version}")
        if write and shard_map.built_from is not None:
            raise FailedPrecondition(
                f"collection {name!r} v{version} is built from v{shard_map.built_from} by a reindex, which copies every "
                f"write of v{shard_map.built_from} into it; write to the active version instead"
            )
        record = versions.with_active(record, shard_map, record.previous_version)
    else:
        shard_map = snapshot.active_shard_map(name)
    if shard_map is None or any(r.state != "serving" for p in shard_map.shards for r in p.replicas):
        raise FailedPrecondition(f"collection {name!r} is being created or changed; retry in a moment")
    return CollectionView(record, shard_map, snapshot.servers)


def check_model(view: CollectionView, model: str) -> None:
    """A request that names an embedding model must name the model of the version it goes to."""
    if model and view.record.model and model != view.record.model:
        raise FailedPrecondition(
            f"collection {view.record.name!r} v{view.version} holds embeddings of model {view.record.model!r}, "
            f"but the request uses {model!r}; embed with that model, or name the version that holds {model!r} "
            f"(`quiver versions {view.record.name}` lists each version's model)"
        )
