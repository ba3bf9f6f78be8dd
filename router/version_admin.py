"""The router's index-version operations: list a collection's versions, cut over to a ready one, roll
back, retire one (the etcd transactions are quiver/control_plane/versions.py; this adds what needs the
shard servers: point counts, and freeing a retired version's partitions)."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import json_format

from quiver.control_plane import versions
from quiver.control_plane.records import CollectionRecord, ShardMap, VersionSpec
from quiver.errors import FailedPrecondition, InvalidArgument, NotFound, QuiverError, Unavailable
from quiver.v1 import router_pb2, shard_pb2
from quiver.wire.specs import index_to_proto
from router.admin import MAX_SHARDS, Admin, Budget, UNLIMITED, placement_candidates
from router.reindex import ReindexBuild, plan_version, versions_built_from
from router.reindex_progress import ProgressBoard

_log = logging.getLogger(__name__)

_SEAL_TTL_S = 60.0  # well past a switch's steps (each capped below), and what a dead router's seal costs
_REPLAY_WAIT_S = 20.0
_SEAL_ROUNDS = 3


class VersionAdmin:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin
        self._store = admin.store
        self._builds: dict[str, ReindexBuild] = {}  # by collection: the build this router runs (or ran last)
        self._locks: dict[str, asyncio.Lock] = {}
        self.board = ProgressBoard(self._store, "", lambda: list(self._builds.values()))

    # -- reindex --------------------------------------------------------------------------------------

    async def reindex(
        self, name: str, index: tuple[str, dict[str, Any]] | None, shards: int, replication: int, budget: Budget = UNLIMITED,
        model: str = "",
    ) -> ReindexBuild | ShardMap | router_pb2.ReindexProgress:
        """Start building v+1 from the active version (or answer the build of it this router, or another
        live router, runs already: the latter as its published progress); for a new embedding model, open
        v+1 for that model's writes instead (its shard map is returned)."""
        async with self._lock(name):
            return await self._reindex(name, index, shards, replication, budget, model)

    def _lock(self, name: str) -> asyncio.Lock:
        """One reindex, cutover, rollback or retire of a collection at a time in this router: two switches
        at once would seal and unseal each other's versions."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def _reindex(
        self, name: str, index: tuple[str, dict[str, Any]] | None, shards: int, replication: int, budget: Budget, model: str,
    ) -> ReindexBuild | ShardMap | router_pb2.ReindexProgress:
        running = self._builds.get(name)
        active = self._admin.watcher.current.collections.get(name)
        if running is not None and running.running and running.state in ("building", "ready") \
                and active is not None and running.source.version == active.active_version:
            asked = _differs(running.target, index, shards, replication, model)
            if asked:
                raise FailedPrecondition(
                    f"reindex of {name!r}: v{running.target.version} is being built with other settings ({asked}); "
                    f"cut over to it, or `quiver retire {name} {running.target.version}` first"
                )
            return running
        if running is not None and running.running:
            # A follow keeping the previous version up to date (for a rollback) ends with a new reindex: only
            # one version at a time is built from or followed into.
            await running.stop()
        record = await self._store.get_collection(name)
        shard_maps = {m.version: m for m in await versions.list_versions(self._store, name)}
        source = shard_maps[record.active_version]
        elsewhere = {p.version: p for p in await self.board.others(name) if p.state in ("building", "ready")}
        for built in versions_built_from(shard_maps.values(), record.active_version):
            if built.version in elsewhere:
                asked = _differs(built, index, shards, replication, model)
                if asked:
                    raise FailedPrecondition(
                        f"reindex of {name!r}: v{built.version} is being built by router {elsewhere[built.version].reported_by} "
                        f"with other settings ({asked}); cut over to it there, or `quiver retire {name} {built.version}` first"
                    )
                return elsewhere[built.version]
        # A build whose router went away (or that failed): superseded, its partitions freed, v untouched.
        for stale in versions_built_from(shard_maps.values(), record.active_version):
            _log.warning("collection %s: v%d's build is not running here (%s); retiring it before a fresh build", name, stale.version, stale.state)
            if stale.state != "failed":
                await versions.set_state(self._store, name, stale.version, "failed", failure="its build stopped; superseded by a new reindex")
            await self._retire(name, stale.version, budget)
        old = versions.spec_of(record, source)
        kind, params = index if index is not None else (old.index_kind, dict(old.index_params))
        new_model = model and model != old.model
        if new_model:
            opened = [m for m in shard_maps.values() if m.spec is not None and m.spec.model == model and m.state in ("building", "ready")]
            if opened:
                return opened[0]  # asked again: the version already open for that model
        spec = VersionSpec(kind, params, model if new_model else old.model, replication or old.replication_factor)
        shards = shards or len(source.shards)
        if shards > MAX_SHARDS:
            raise InvalidArgument(f"shards={shards} exceeds the maximum of {MAX_SHARDS}")
        snapshot = self._admin.watcher.current
        server_ids = placement_candidates(snapshot.servers, snapshot.drains, spec.replication_factor)
        if len(server_ids) < spec.replication_factor:
            raise FailedPrecondition(
                f"reindex of {name!r}: replication_factor {spec.replication_factor} needs {spec.replication_factor} live shard servers; {len(snapshot.servers)} registered"
            )
        version = max([*shard_maps, record.active_version]) + 1
        planned = plan_version(record, source, version, spec, shards, server_ids)
        if new_model:
            planned = replace(planned, built_from=None)  # filled by the client with the new model's vectors
        else:
            await self.board.announce(name, source.version, version)  # before another router could see v+1
        try:
            return await self._create_version(name, record, source, planned, snapshot.addresses(), budget, new_model, model, old.model)
        finally:
            self.board.withdraw(name, version)  # published as its build from here on, or not at all

    async def _create_version(
        self, name: str, record: CollectionRecord, source: ShardMap, planned: ShardMap, addresses: dict[str, str], budget: Budget,
        new_model: bool, model: str, old_model: str,
    ) -> ReindexBuild | ShardMap:
        version, spec = planned.version, planned.spec
        assert spec is not None
        await versions.add_version(self._store, planned)
        try:
            # The partitions take the new version's spec: the record as it would read with v+1 active.
            await self._admin.create_partitions(versions.with_active(record, planned, record.previous_version), planned, addresses, budget)
            target, revision = await versions.mark_serving(self._store, name, version)
            await self._admin.seen(revision, budget)
        except BaseException:
            cleanup = asyncio.ensure_future(self._abandon(name, version, "its partitions could not be created"))
            await asyncio.shield(cleanup)
            raise
        if new_model:
            opened, revision = await versions.set_state(self._store, name, version, "ready")
            await self._admin.seen(revision, budget)
            _log.warning("collection %s: v%d opened for writes of model %r beside v%d (model %r)", name, version, model, source.version, old_model)
            return opened
        build = ReindexBuild(self._admin.pool, self._admin.watcher, self._store, record, source, target)
        build.start()
        self._builds[name] = build
        self.board.ensure_running()
        _log.warning("collection %s: building v%d (%s, %d shards, rf %d) from v%d", name, version, spec.index_kind, len(planned.shards), spec.replication_factor, source.version)
        return build

    async def _abandon(self, name: str, version: int, why: str) -> None:
        try:
            await versions.set_state(self._store, name, version, "failed", failure=why)
            await self._retire(name, version)
        except Exception as error:  # noqa: BLE001 - the reason the caller sees is the first failure
            _log.warning("collection %s: cleaning up v%d failed too: %s", name, version, error)

    def builds(self, name: str = "") -> list[ReindexBuild]:
        return [b for n, b in sorted(self._builds.items()) if not name or n == name]

    async def close(self) -> None:
        for build in self._builds.values():
            await build.stop()
        await self.board.close()

    async def _seal(self, name: str, version: int, sealed: bool, reason: str, budget: Budget) -> dict[int, tuple[int, int]]:
        """Seal (or unseal) a version's primaries as the current map has them: {shard: (last LSN, term)}.
        Every call is settled before this returns; a primary that is down is an error when sealing (its
        writes could not be stopped) and skipped when unsealing (it comes back unsealed)."""
        snapshot = self._admin.watcher.current
        shard_map = snapshot.shard_maps.get((name, version))
        if shard_map is None:
            raise FailedPrecondition(f"collection {name!r} has no v{version} any more")
        calls = {}
        for placement in shard_map.shards:
            server = snapshot.servers.get(placement.primary)
            if server is None:
                if sealed:
                    raise Unavailable(f"shard {placement.shard} of {name!r} v{version}: its primary {placement.primary} is down; retry once it is back or replaced")
                continue
            request = shard_pb2.SealWritesRequest(
                ref=shard_pb2.PartitionRef(collection=name, shard=placement.shard, version=version), sealed=sealed, reason=reason,
                ttl_s=_SEAL_TTL_S,
            )
            calls[placement.shard] = self._admin.pool.stub(server.address).SealWrites(request, timeout=budget.cap(10.0))
        replies = await asyncio.gather(*calls.values(), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return {shard: (reply.last_lsn, reply.term) for shard, reply in zip(calls, replies)}  # type: ignore[union-attr]

    async def _unseal_quietly(self, name: str, version: int) -> None:
        try:
            await self._seal(name, version, False, "", UNLIMITED)
        except (grpc.aio.AioRpcError, QuiverError) as error:
            # The seal lapses by itself (its time to live); a restarted server comes back unsealed.
            _log.warning("collection %s: lifting the seal of v%d failed on a shard: %s", name, version, error)

    async def _sealed_and_replayed(self, build: ReindexBuild, what: str, budget: Budget) -> None:
        """Seal the source's primaries and replay up to the LSNs they answered; then seal again and go round
        once more if any moved (a primary that restarted within its lease lost the seal and took writes) or
        changed term (a failover), so when this returns the build holds every write the source acknowledged
        and the source takes no more (for the seal's time to live, renewed by the second seal)."""
        name, source, target = build.name, build.source.version, build.target.version
        reason = f"collection {name!r} is being switched from v{source} to v{target} ({what})"
        expected = build.terms()
        previous: dict[int, tuple[int, int]] | None = None
        for _ in range(_SEAL_ROUNDS):
            sealed = await self._seal(name, source, True, reason, budget)
            changed = sorted(s for s, (_, t) in sealed.items() if t != expected[s])
            if changed:
                raise FailedPrecondition(f"{what} of {name!r}: shards {changed} of v{source} changed primary meanwhile; run the reindex again")
            if sealed == previous:
                return
            await build.replayed_through({s: lsn for s, (lsn, _) in sealed.items()}, budget.cap(_REPLAY_WAIT_S))
            previous = sealed
        raise FailedPrecondition(f"{what} of {name!r}: v{source} kept taking writes through its seal; retry")

    async def _switch_followed(
        self, build: ReindexBuild, what: str, switch: Callable[[int], Awaitable[tuple[CollectionRecord, int]]], budget: Budget,
    ) -> tuple[CollectionRecord, int]:
        """A switch from build.source to build.target, which the build keeps up to date: seal the source's
        primaries and replay what they acknowledged (_sealed_and_replayed), switch in one transaction that also
        compares the source's shard map as it was when sealed (a failover since fails it), then lift any seal
        on the new active version and follow it back into the old one, so a switch back later loses no write.
        `switch(source_revision)` runs the transaction."""
        name, source, target = build.name, build.source.version, build.target.version
        if build.state not in ("ready", "following"):
            raise FailedPrecondition(f"{what} of {name!r} to v{target} refused: its build is {build.state}" + (f" ({build.failure})" if build.failure else ""))
        try:
            source_revision = await versions.map_revision(self._store, name, source)
            await self._sealed_and_replayed(build, what, budget)
            # v_target takes no router write before the switch, so its log position now is where the follow
            # back starts: every write after it is a router's, made once the switch is in its watch.
            positions = await build.target_positions()
            switched = await switch(source_revision)
        except BaseException:
            await asyncio.shield(asyncio.ensure_future(self._unseal_quietly(name, source)))
            raise
        # Switched: what follows must run even if the caller goes away now.
        await asyncio.shield(asyncio.ensure_future(self._after_switch(build, positions)))
        return switched

    async def _after_switch(self, build: ReindexBuild, positions: dict[int, tuple[int, int]]) -> None:
        name, source, target = build.name, build.source.version, build.target.version
        await build.stop()
        build.state = "cut_over"
        await self._unseal_quietly(name, target)  # sealed if it was switched away from before
        snapshot = self._admin.watcher.current
        back = ReindexBuild(
            self._admin.pool, self._admin.watcher, self._store, build.record,
            snapshot.shard_maps.get((name, target), build.target), snapshot.shard_maps.get((name, source), build.source), follow_from=positions,
        )
        back.start()
        self._builds[name] = back
        self.board.ensure_running()

    async def _point_counts(self, shard_maps: list[ShardMap]) -> dict[int, int | None]:
        """Points each version's shard primaries hold now, by version (None: a primary did not answer)."""
        servers = self._admin.watcher.current.servers
        wanted = sorted({p.primary for m in shard_maps for p in m.shards if p.primary in servers})
        stats = dict(zip(wanted, await asyncio.gather(*(self._admin.stats_of(servers[s].address) for s in wanted))))
        counts: dict[int, int | None] = {}
        for shard_map in shard_maps:
            total: int | None = 0
            for placement in shard_map.shards:
                found = (stats.get(placement.primary) or {}).get((shard_map.collection, placement.shard, shard_map.version))
                total = None if found is None or total is None else total + found.point_count
            counts[shard_map.version] = total
        return counts

    async def list_versions(self, name: str) -> router_pb2.ListVersionsResponse:
        record = await self._store.get_collection(name)
        shard_maps = await versions.list_versions(self._store, name)
        counts = await self._point_counts([m for m in shard_maps if m.state != "retired"])
        verified = await self._verifications(name)
        reply = router_pb2.ListVersionsResponse(active=record.active_version, previous=record.previous_version or 0)
        for shard_map in shard_maps:
            spec = versions.spec_of(record, shard_map) if shard_map.spec or shard_map.version == record.active_version else None
            info = router_pb2.VersionInfo(
                version=shard_map.version, state=shard_map.state, shards=len(shard_map.shards), failure=shard_map.failure,
                built_from=shard_map.built_from or 0, created_unix=shard_map.created_unix, point_count=counts.get(shard_map.version) or 0,
            )
            if spec is not None:
                info.index.CopyFrom(index_to_proto(spec.index_kind, spec.index_params))
                info.model, info.replication_factor = spec.model, spec.replication_factor
            if shard_map.version in verified:
                info.verification.CopyFrom(verified[shard_map.version])
            reply.versions.append(info)
        return reply

    async def record_verification(self, name: str, figures: router_pb2.VerificationFigures) -> None:
        """Keep the last verification of a version, for `quiver versions` (any router lists it)."""
        shard_maps = {m.version: m for m in await versions.list_versions(self._store, name)}  # NotFound: no collection
        if figures.version not in shard_maps:
            raise NotFound(f"collection {name!r} has no version {figures.version}")
        if not 0 <= figures.recall <= 1 or not 0 <= figures.overlap <= 1:
            raise InvalidArgument(f"recall and overlap are fractions in [0, 1], got {figures.recall} and {figures.overlap}")
        await self._store.client.put(self._store.keys.verification(name, figures.version), json_format.MessageToJson(figures).encode())

    async def _verifications(self, name: str) -> dict[int, router_pb2.VerificationFigures]:
        listed = await self._store.messages_under(self._store.keys.verifications_prefix(name), router_pb2.VerificationFigures)
        return {figures.version: figures for figures in listed}

    async def _expected(self, name: str, expected_active: int) -> CollectionRecord:
        record = await self._store.get_collection(name)
        if expected_active and record.active_version != expected_active:
            raise FailedPrecondition(
                f"{name!r}: the active version is v{record.active_version}, not v{expected_active} as expected "
                "(another cutover or rollback won); look again before switching"
            )
        return record

    async def cutover(self, name: str, expected_active: int, target: int, force: bool, budget: Budget = UNLIMITED) -> CollectionRecord:
        async with self._lock(name):
            return await self._cutover(name, expected_active, target, force, budget)

    async def _cutover(self, name: str, expected_active: int, target: int, force: bool, budget: Budget) -> CollectionRecord:
        record = await self._expected(name, expected_active)
        shard_maps = {m.version: m for m in await versions.list_versions(self._store, name)}
        if not target:
            ready = [v for v, m in shard_maps.items() if m.state == "ready"]
            if not ready:
                raise FailedPrecondition(f"cutover of {name!r}: no version is ready (`quiver versions {name}` lists them)")
            target = max(ready)
        if target not in shard_maps:
            raise NotFound(f"collection {name!r} has no version {target}")
        build = self._builds.get(name)
        built_here = build is not None and build.running and build.target.version == target
        if not built_here and shard_maps[target].built_from == record.active_version and not force:
            raise FailedPrecondition(
                f"cutover of {name!r} to v{target} refused: no build in this router keeps it up to date with "
                f"v{record.active_version} (it ran in a router that stopped, or on another router), so writes made since "
                f"may be missing; cut over through the router running its build, run `quiver reindex {name}` again, or --force"
            )
        if built_here:
            # --force skips only the point-count check below; a version this router builds is always
            # switched to the careful way, or writes made meanwhile would be lost or overwritten.
            assert build is not None
            updated, revision = await self._switch_followed(
                build, "cutover",
                lambda source_revision: versions.cutover(self._store, name, record.active_version, target, active_revision=source_revision),
                budget,
            )
            await self._admin.seen(revision, budget)
            _log.warning("collection %s: cut over from v%d to v%d (built here; sealed and replayed first)", name, record.active_version, target)
            return updated
        if not force:
            # Writes reach both versions, so a complete build holds what the active version holds.
            counts = await self._point_counts([shard_maps[record.active_version], shard_maps[target]])
            active_count, target_count = counts[record.active_version], counts[target]
            if active_count is None or target_count is None or active_count != target_count:
                raise FailedPrecondition(
                    f"cutover of {name!r} to v{target} refused: it holds {_count(target_count)} points, the active "
                    f"v{record.active_version} holds {_count(active_count)}; wait for the build to finish, or --force"
                )
        updated, revision = await versions.cutover(self._store, name, record.active_version, target)
        await self._admin.seen(revision, budget)
        _log.warning("collection %s: cut over from v%d to v%d", name, record.active_version, target)
        return updated

    async def rollback(self, name: str, expected_active: int, force: bool = False, budget: Budget = UNLIMITED) -> CollectionRecord:
        async with self._lock(name):
            return await self._rollback(name, expected_active, force, budget)

    async def _rollback(self, name: str, expected_active: int, force: bool, budget: Budget) -> CollectionRecord:
        record = await self._expected(name, expected_active)
        build = self._builds.get(name)
        if build is not None and build.running and build.state == "following" and build.source.version == record.active_version \
                and build.target.version == record.previous_version:
            # The previous version was kept up to date since the cutover: switch back the same careful way.
            updated, revision = await self._switch_followed(
                build, "rollback",
                lambda source_revision: versions.rollback(self._store, name, record.active_version, active_revision=source_revision),
                budget,
            )
        else:
            if record.previous_version is not None and not force:
                raise FailedPrecondition(
                    f"rollback of {name!r} to v{record.previous_version} refused: no follow in this router kept it up to "
                    f"date with v{record.active_version} since the cutover (the router that cut over stopped, a primary "
                    "failed over, or another reindex began), so writes made since would be missing from it; roll back "
                    "through the router that cut over, or --force to accept that"
                )
            updated, revision = await versions.rollback(self._store, name, record.active_version)
            if record.previous_version is not None:
                await self._unseal_quietly(name, record.previous_version)  # the cutover's seal, if any
        await self._admin.seen(revision, budget)
        _log.warning("collection %s: rolled back from v%d to v%d", name, record.active_version, updated.active_version)
        return updated

    async def retire(self, name: str, version: int, budget: Budget = UNLIMITED) -> None:
        """Mark the version retired (it takes no more writes), then free its partitions on the servers."""
        async with self._lock(name):
            await self._retire(name, version, budget)

    async def _retire(self, name: str, version: int, budget: Budget = UNLIMITED) -> None:
        build = self._builds.get(name)
        if build is not None and build.target.version == version:
            await build.stop()
        retired, revision = await versions.set_state(self._store, name, version, "retired")
        await self._admin.seen(revision, budget)
        addresses = self._admin.watcher.current.addresses()
        await self._admin.drop_partitions(name, [retired], addresses)


def _differs(target: ShardMap, index: tuple[str, dict[str, Any]] | None, shards: int, replication: int, model: str) -> str:
    """What a reindex request asks for that the version being built is not ("" if nothing)."""
    spec = target.spec
    assert spec is not None
    differences = []
    if index is not None and (index[0], index[1]) != (spec.index_kind, dict(spec.index_params)):
        differences.append(f"index {index[0]} {index[1]} instead of {spec.index_kind} {dict(spec.index_params)}")
    if shards and shards != len(target.shards):
        differences.append(f"{shards} shards instead of {len(target.shards)}")
    if replication and replication != spec.replication_factor:
        differences.append(f"replication factor {replication} instead of {spec.replication_factor}")
    if model and model != spec.model:
        differences.append(f"model {model!r}: a new model gets a version of its own, once this build is cut over or retired")
    return "; ".join(differences)


def _count(count: int | None) -> str:
    return "an unknown number of" if count is None else f"{count:,}"
