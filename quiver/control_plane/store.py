"""ClusterStore: reads and writes Quiver's cluster state (collections, shard maps, live servers) in etcd.

Every multi-key change is one etcd transaction, so readers never see half a collection: creating one writes
its record and first shard map together, only if the name is free; dropping one deletes the record and all
its shard maps together. Read-modify-write (`update_collection`) compares the record's mod_revision and
retries on conflict, so concurrent updates are never lost. `snapshot()` reads the whole root in one request,
at one revision: that immutable ClusterSnapshot is what the router serves from.

Shard servers announce themselves with `register_server`: a record under a lease that a background task
keeps alive, so a server that dies vanishes from the state within its TTL.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from quiver.control_plane.etcd_client import EtcdClient, KeyValue, WatchEvent
from quiver.control_plane.keys import DEFAULT_ROOT, KeyLayout
from quiver.control_plane.records import AliasRecord, CollectionRecord, ServerRecord, ShardMap, ShardPlacement
from quiver.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, QuiverError, Unavailable

_log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
_ALIAS_ATTEMPTS = 5


@dataclass(frozen=True)
class ClusterSnapshot:
    """The whole cluster state under one root as of etcd `revision`. Immutable: share it freely."""

    revision: int
    collections: Mapping[str, CollectionRecord]
    shard_maps: Mapping[tuple[str, int], ShardMap]  # keyed (collection name, version)
    servers: Mapping[str, ServerRecord]
    # Records under the root that could not be read (key, why): skipped, so one bad or future record
    # never stops a router, and reported by cluster status for an operator.
    skipped: tuple[tuple[str, str], ...] = ()
    drains: frozenset[str] = frozenset()  # servers being drained (their replicas move away)
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # alias -> the collection it names

    def resolve(self, name: str) -> str:
        """The collection `name` names: itself, or the one the alias `name` points at."""
        return name if name in self.collections else self.aliases.get(name, name)

    def addresses(self) -> dict[str, str]:
        """server id -> the address it registered, for every live server."""
        return {s.server_id: s.address for s in self.servers.values()}

    def active_shard_map(self, name: str) -> ShardMap | None:
        """The serving shard map of collection `name`, or None if the collection or its map is missing."""
        record = self.collections.get(name)
        return None if record is None else self.shard_maps.get((name, record.active_version))


class Registration:
    """A shard server's presence in etcd, kept alive by `keepalive_task` until `close()`."""

    def __init__(self, client: EtcdClient, key: str, record: ServerRecord, ttl: float) -> None:
        self._client = client
        self.key = key
        self.record = record
        self._ttl = ttl
        self.lease_id = 0
        self.granted_ttl = 0
        self.keepalive_task: asyncio.Task[None] | None = None
        # Monotonic time until which the lease is surely alive in etcd: the send time of the last renewal
        # etcd confirmed, plus the TTL. etcd expires the lease no sooner, so a primary that stops
        # acknowledging writes at this time has stopped before any controller can have replaced it.
        self.valid_until = 0.0

    @property
    def lease_alive(self) -> bool:
        return time.monotonic() < self.valid_until

    @property
    def server_id(self) -> str:
        return self.record.server_id

    async def _register(self) -> None:
        sent = time.monotonic()
        lease = await self._client.grant_lease(self._ttl)
        try:
            await self._client.put(self.key, self.record.to_json(), lease=lease.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.revoke_lease(lease.id)
            raise
        self.lease_id, self.granted_ttl = lease.id, lease.ttl
        self.valid_until = sent + lease.ttl

    async def _keep_alive(self) -> None:
        # Renew at a third of the TTL so two renewals can fail before the record expires.
        interval = max(0.2, self.granted_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                sent = time.monotonic()
                ttl = await self._client.keepalive_lease(self.lease_id)
                if ttl <= 0:
                    _log.warning("lease of server %s expired; registering it again", self.server_id)
                    await self._register()
                else:
                    self.valid_until = sent + ttl
            except Unavailable as exc:
                _log.warning("cannot renew the lease of server %s: %s", self.server_id, exc)
            except Exception:
                _log.exception("renewing the lease of server %s failed", self.server_id)

    async def close(self) -> None:
        """Stop renewing and revoke the lease, which removes the server's record at once."""
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keepalive_task
        try:
            await self._client.revoke_lease(self.lease_id)
        except Unavailable as exc:
            _log.warning("could not revoke the lease of server %s (it will expire): %s", self.server_id, exc)


class ClusterStore:
    def __init__(self, client: EtcdClient, root: str = DEFAULT_ROOT) -> None:
        self.client = client
        self.keys = KeyLayout(root)

    async def create_collection(self, record: CollectionRecord, shard_map: ShardMap) -> int:
        """Write the record and its first shard map atomically; AlreadyExists if the name is taken.
        Returns the etcd revision of the write."""
        if shard_map.collection != record.name or shard_map.version != record.active_version:
            raise InvalidArgument(
                f"shard map ({shard_map.collection!r} v{shard_map.version}) does not belong to collection "
                f"{record.name!r} v{record.active_version}"
            )
        if len(shard_map.shards) != record.shards:
            raise InvalidArgument(
                f"collection {record.name!r} has {record.shards} shards but its shard map places "
                f"{len(shard_map.shards)}"
            )
        try:
            return await self.client.create_if_absent(
                self.keys.collection(record.name),
                record.to_json(),
                also_put={self.keys.shard_map(record.name, shard_map.version): shard_map.to_json()},
            )
        except Aborted:
            raise AlreadyExists(f"collection {record.name!r} already exists") from None

    async def _get_collection_kv(self, name: str) -> tuple[KeyValue, CollectionRecord]:
        kv = await self.client.get(self.keys.collection(name))
        if kv is None:
            raise NotFound(f"collection {name!r} does not exist")
        return kv, CollectionRecord.from_json(kv.value)

    async def last_change_revision(self) -> int:
        """The revision of the newest record under the root now: a snapshot at least this new holds every
        record written before the call. (etcd's own revision also counts writes outside the root, such as
        reindex progress and other clusters' keys, which no snapshot of this root ever reaches.)"""
        return await self.client.last_change_under(self.keys.root)

    async def get_collection_at(self, name: str) -> tuple[int, CollectionRecord]:
        """The collection record and its mod_revision, for a transaction that must see it unchanged."""
        kv, record = await self._get_collection_kv(name)
        return kv.mod_revision, record

    async def messages_under(self, prefix: str, message_type: type[M]) -> list[M]:
        """The protobuf messages kept as JSON under `prefix` (reindex progress, verification figures). A
        record that does not parse is skipped and logged, as the snapshot skips unreadable records."""
        found = []
        for kv in (await self.client.get_prefix(prefix)).kvs:
            try:
                found.append(json_format.Parse(kv.value, message_type(), ignore_unknown_fields=True))
            except (json_format.ParseError, UnicodeDecodeError) as error:
                _log.warning("skipped unreadable record %s: %s", kv.key, error)
        return found

    async def get_collection(self, name: str) -> CollectionRecord:
        return (await self._get_collection_kv(name))[1]

    async def list_collections(self) -> list[CollectionRecord]:
        result = await self.client.get_prefix(self.keys.collections_prefix)
        return [CollectionRecord.from_json(kv.value) for kv in result.kvs]

    async def _drop_at(self, name: str, revision: int) -> int:
        """Delete the record and every shard map of `name` in one transaction, only if the record is still
        the one at `revision`; Aborted otherwise. Returns the revision of the delete."""
        key = self.keys.collection(name)
        return await self.client.swap(
            {key: revision}, delete=[key], delete_prefixes=[self.keys.shard_maps_prefix(name), self.keys.verifications_prefix(name)],
        )

    async def _put_shard_map_at(self, shard_map: ShardMap, revision: int) -> int:
        """Store a shard map only if its collection's record is still the one at `revision` (the compare
        keeps a concurrent drop from leaving an orphan shard map behind); Aborted otherwise."""
        name = shard_map.collection
        return await self.client.swap(
            {self.keys.collection(name): revision},
            put={self.keys.shard_map(name, shard_map.version): shard_map.to_json()},
        )

    async def drop_collection(self, name: str) -> int:
        """Delete the record and every shard map of `name` atomically; NotFound if absent."""
        for _ in range(_MAX_ATTEMPTS):
            kv, _record = await self._get_collection_kv(name)
            try:
                return await self._drop_at(name, kv.mod_revision)
            except Aborted:
                await _pause()
        raise Aborted(f"collection {name!r} kept changing while it was being dropped; try again")

    async def take_over_stale_claim(self, name: str, claimed_before_unix: float) -> bool:
        """Drop `name` if it is a create's claim (every replica still "creating") made before the given
        time, i.e. one whose creator died; True if it was dropped. One transaction on the record's revision,
        so a creator that finishes meanwhile wins."""
        try:
            kv, record = await self._get_collection_kv(name)
            shard_map = await self.get_shard_map(name, record.active_version)
        except NotFound:
            return False
        claimed = all(r.state == "creating" for p in shard_map.shards for r in p.replicas)
        if not claimed or record.created_unix >= claimed_before_unix:
            return False
        _log.warning("taking over the stale claim on collection %r (made at %.0f)", name, record.created_unix)
        try:
            await self._drop_at(name, kv.mod_revision)
        except Aborted:
            return False
        return True

    async def drop_collection_at(self, name: str, revision: int) -> None:
        """Drop `name` only if its record is still the one written at `revision` (a failed create rolling
        back its own claim); a collection of that name someone else made meanwhile is left alone."""
        try:
            await self._drop_at(name, revision)
        except Aborted:
            _log.warning("collection %r changed since revision %d; not dropping it", name, revision)

    async def update_collection(
        self,
        name: str,
        mutate: Callable[[CollectionRecord], CollectionRecord],
        *,
        max_attempts: int = 16,
    ) -> CollectionRecord:
        """Apply `mutate` to the current record and write it back only if nobody changed it meanwhile,
        re-reading and retrying on conflict (so `mutate` may run more than once). Returns the stored record."""
        key = self.keys.collection(name)
        for _ in range(max_attempts):
            kv, record = await self._get_collection_kv(name)
            updated = mutate(record)
            if updated.name != name:
                raise InvalidArgument(f"update of collection {name!r} must not rename it to {updated.name!r}")
            try:
                await self.client.swap({key: kv.mod_revision}, put={key: updated.to_json()})
                return updated
            except Aborted:
                await _pause()
        raise Aborted(f"collection {name!r} changed concurrently {max_attempts} times; giving up")

    async def put_shard_map(self, shard_map: ShardMap, *, collection_revision: int | None = None) -> int:
        """Store one version of a collection's shard map; NotFound if the collection does not exist.

        With `collection_revision` (the revision at which the caller wrote or read the collection record),
        only if the record is still that one: Aborted when it was dropped, re-created or changed since, so
        a slow creator can never write into a collection of the same name that someone else made."""
        name = shard_map.collection
        if collection_revision is not None:
            try:
                return await self._put_shard_map_at(shard_map, collection_revision)
            except Aborted:
                raise Aborted(f"collection {name!r} was dropped or changed by someone else meanwhile") from None
        for _ in range(_MAX_ATTEMPTS):
            kv, _record = await self._get_collection_kv(name)
            try:
                return await self._put_shard_map_at(shard_map, kv.mod_revision)
            except Aborted:
                await _pause()
        raise Aborted(f"collection {name!r} kept changing while its shard map was being stored; try again")

    async def update_placement(
        self, name: str, version: int, shard: int, mutate: Callable[[ShardPlacement], ShardPlacement | None],
    ) -> ShardPlacement:
        """Change one shard's replica group configuration: `mutate` gets the current placement and returns
        the new one (None: no change needed), or raises (e.g. Aborted when the term it expected is gone).
        Written by one transaction comparing the shard map's mod_revision, so a controller or primary acting
        on a stale configuration can never overwrite a newer one; a conflict re-reads and calls `mutate`
        again. Returns the placement now stored."""
        key = self.keys.shard_map(name, version)
        for _ in range(_MAX_ATTEMPTS):
            kv = await self.client.get(key)
            if kv is None:
                raise NotFound(f"collection {name!r} has no shard map version {version}")
            shard_map = ShardMap.from_json(kv.value)
            if not 0 <= shard < len(shard_map.shards):
                raise NotFound(f"collection {name!r} v{version} has no shard {shard}")
            current = shard_map.shards[shard]
            updated = mutate(current)
            if updated is None or updated == current:
                return current
            shards = list(shard_map.shards)
            shards[shard] = updated
            try:
                await self.client.swap({key: kv.mod_revision}, put={key: replace(shard_map, shards=tuple(shards)).to_json()})
                return updated
            except Aborted:
                await _pause()
        raise Aborted(f"the shard map of {name!r} v{version} kept changing while shard {shard} was being updated; try again")

    async def get_shard_map(self, name: str, version: int) -> ShardMap:
        kv = await self.client.get(self.keys.shard_map(name, version))
        if kv is None:
            raise NotFound(f"collection {name!r} has no shard map version {version}")
        return ShardMap.from_json(kv.value)

    async def register_server(self, server_id: str, address: str, ttl: float) -> Registration:
        """Publish a server under a lease of `ttl` seconds and keep it alive in the background. A record
        left by an earlier process with the same id is replaced."""
        registration = Registration(
            self.client, self.keys.server(server_id), ServerRecord(server_id, address, time.time()), ttl
        )
        await registration._register()
        registration.keepalive_task = asyncio.create_task(
            registration._keep_alive(), name=f"quiver-keepalive-{server_id}"
        )
        return registration

    async def request_drain(self, server_id: str, *, cancel: bool = False) -> int:
        """Ask the controller to move every replica off `server_id` (or stop asking); returns the revision."""
        key = self.keys.drain(server_id)
        if cancel:
            await self.client.delete(key)
            return (await self.client.get_prefix(self.keys.drains_prefix)).revision
        return await self.client.put(key, json.dumps({"schema": 1, "requested_unix": time.time()}).encode())

    async def list_servers(self) -> list[ServerRecord]:
        result = await self.client.get_prefix(self.keys.servers_prefix)
        return [ServerRecord.from_json(kv.value) for kv in result.kvs]

    async def snapshot(self) -> ClusterSnapshot:
        result = await self.client.get_prefix(self.keys.root)
        collections: dict[str, CollectionRecord] = {}
        shard_maps: dict[tuple[str, int], ShardMap] = {}
        servers: dict[str, ServerRecord] = {}
        drains: set[str] = set()
        aliases: dict[str, str] = {}
        skipped: list[tuple[str, str]] = []
        for kv in result.kvs:
            parsed = self.keys.parse(kv.key)
            if parsed is None:
                continue
            try:
                if parsed.kind == "collection":
                    collections[parsed.name] = CollectionRecord.from_json(kv.value)
                elif parsed.kind == "shard_map":
                    assert parsed.version is not None
                    shard_maps[(parsed.name, parsed.version)] = ShardMap.from_json(kv.value)
                elif parsed.kind == "drain":
                    drains.add(parsed.name)
                elif parsed.kind == "alias":
                    aliases[parsed.name] = AliasRecord.from_json(kv.value).collection
                else:
                    servers[parsed.name] = ServerRecord.from_json(kv.value)
            except (QuiverError, TypeError, ValueError) as error:
                skipped.append((kv.key, str(error)))
        if skipped:
            _log.warning("skipped %d unreadable record(s) under %s: %s", len(skipped), self.keys.root, skipped)
        return ClusterSnapshot(
            result.revision,
            MappingProxyType(collections),
            MappingProxyType(shard_maps),
            MappingProxyType(servers),
            tuple(skipped),
            frozenset(drains),
            MappingProxyType(aliases),
        )

    async def set_alias(self, alias: str, collection: str, *, expected: str | None = None) -> int:
        """Point `alias` at `collection` in one transaction, which also checks that the collection exists and
        no collection is named `alias`. `expected`: the collection the alias must point at now ("" = the alias
        must not exist yet), else FailedPrecondition (of two concurrent switches from the same target, one
        wins). Returns the revision of the write."""
        for _ in range(_ALIAS_ATTEMPTS):
            alias_key, collection_key, clashing = self.keys.alias(alias), self.keys.collection(collection), self.keys.collection(alias)
            current = await self.client.get(alias_key)
            target = await self.client.get(collection_key)
            if target is None:
                raise NotFound(f"collection {collection!r} does not exist; an alias must name one")
            if await self.client.get(clashing) is not None:
                raise AlreadyExists(f"{alias!r} is the name of a collection; an alias needs a name of its own")
            now = AliasRecord.from_json(current.value).collection if current is not None else ""
            if expected is not None and now != expected:
                raise FailedPrecondition(
                    f"alias {alias!r} points at {now!r}, not {expected!r} as expected"
                    if now else f"alias {alias!r} does not exist (expected it to point at {expected!r})"
                )
            record = AliasRecord(alias, collection, time.time())
            try:
                return await self.client.swap(
                    {alias_key: current.mod_revision if current else 0, collection_key: target.mod_revision, clashing: 0},
                    put={alias_key: record.to_json()},
                )
            except Aborted:
                continue  # the alias or its collection changed meanwhile: look again (`expected` checked again)
        raise FailedPrecondition(f"alias {alias!r} kept changing while it was being set; retry")

    async def delete_alias(self, alias: str, *, expected: str | None = None) -> int:
        key = self.keys.alias(alias)
        current = await self.client.get(key)
        if current is None:
            raise NotFound(f"alias {alias!r} does not exist")
        now = AliasRecord.from_json(current.value).collection
        if expected is not None and now != expected:
            raise FailedPrecondition(f"alias {alias!r} points at {now!r}, not {expected!r} as expected")
        try:
            return await self.client.swap({key: current.mod_revision}, delete=[key])
        except Aborted:
            raise FailedPrecondition(f"alias {alias!r} changed meanwhile; look again and retry") from None

    def watch(self, start_revision: int, *, max_backoff: float = 2.0) -> AsyncIterator[WatchEvent]:
        """Every change under the root from `start_revision` on; see EtcdClient.watch_prefix."""
        return self.client.watch_prefix(self.keys.root, start_revision, max_backoff=max_backoff)


_MAX_ATTEMPTS = 16


async def _pause() -> None:
    # Jittered so that contending writers stop colliding in lockstep.
    await asyncio.sleep(random.uniform(0.0, 0.02))
