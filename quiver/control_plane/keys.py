"""The etcd key layout of Quiver's cluster state; the one place that spells keys.

Everything lives under one root prefix, "/quiver/" unless configured (tests and side-by-side clusters give
each its own root so one etcd can hold several):

    {root}collections/{name}                 CollectionRecord, JSON
    {root}shardmaps/{name}/{version:08d}     ShardMap of one version of a collection, JSON; replicas are
                                             named by server id, never by address
    {root}servers/{server_id}                ServerRecord, JSON, attached to the server's lease, so it
                                             disappears when the server stops renewing it
    {root}drains/{server_id}                 a drain request (JSON: when it was made): the controller moves
                                             every replica off that server
    {root}aliases/{alias}                    AliasRecord, JSON: a second name for a collection
    {root}verifications/{name}/{version:08d} the last shadow verification of a version (JSON
                                             VerificationFigures); read by ListVersions, not by watchers
    {root}controller                         the id of the router holding the controller role, under its
                                             lease (see election.py)

Beside the root, not under it (so its frequent updates never wake the watchers of the cluster state):

    {root without its last /}~reindex/{name}/{version:08d}
                                             a running build's progress (JSON ReindexProgress), published
                                             by the router running it (router/reindex_progress.py)

Versions are zero-padded to 8 digits so etcd's lexical key order is numeric order, and the collection's
shard-map prefix ends in "/" so collection "a" never matches the maps of collection "ab". Collection
names and server ids must therefore be single path segments (no "/", no whitespace or control
characters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quiver.errors import InvalidArgument

DEFAULT_ROOT = "/quiver/"
_MAX_SEGMENT = 255
_MAX_VERSION = 99_999_999


def check_segment(what: str, value: str) -> str:
    """`value` if it can be one key segment, else InvalidArgument naming `what`."""
    if not value or len(value) > _MAX_SEGMENT:
        raise InvalidArgument(f"{what} must be 1 to {_MAX_SEGMENT} characters, got {value!r}")
    if "/" in value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidArgument(f"{what} {value!r} must not contain '/', whitespace or control characters")
    return value


def _check_version(version: int) -> int:
    if not 0 <= version <= _MAX_VERSION:
        raise InvalidArgument(f"shard map version must be in 0..{_MAX_VERSION}, got {version}")
    return version


@dataclass(frozen=True)
class ParsedKey:
    kind: Literal["collection", "shard_map", "server", "drain", "alias"]
    name: str  # collection name, or server id for kind "server"
    version: int | None = None  # shard-map version for kind "shard_map"


@dataclass(frozen=True)
class KeyLayout:
    """Builds and parses keys under `root` (normalised to start and end with '/')."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        root = self.root if self.root.endswith("/") else self.root + "/"
        if not root.startswith("/") or "//" in root:
            raise InvalidArgument(f"etcd root prefix {self.root!r} must look like '/quiver/'")
        object.__setattr__(self, "root", root)

    @property
    def collections_prefix(self) -> str:
        return f"{self.root}collections/"

    def collection(self, name: str) -> str:
        return self.collections_prefix + check_segment("collection name", name)

    @property
    def reindex_progress_prefix(self) -> str:
        return f"{self.root[:-1]}~reindex/"

    def reindex_progress(self, name: str, version: int) -> str:
        return f"{self.reindex_progress_prefix}{check_segment('collection name', name)}/{_check_version(version):08d}"

    @property
    def all_shard_maps_prefix(self) -> str:
        return f"{self.root}shardmaps/"

    def shard_maps_prefix(self, name: str) -> str:
        return f"{self.all_shard_maps_prefix}{check_segment('collection name', name)}/"

    def shard_map(self, name: str, version: int) -> str:
        return f"{self.shard_maps_prefix(name)}{_check_version(version):08d}"

    @property
    def servers_prefix(self) -> str:
        return f"{self.root}servers/"

    def server(self, server_id: str) -> str:
        return self.servers_prefix + check_segment("server id", server_id)

    def verifications_prefix(self, name: str) -> str:
        return f"{self.root}verifications/{check_segment('collection name', name)}/"

    def verification(self, name: str, version: int) -> str:
        return f"{self.verifications_prefix(name)}{_check_version(version):08d}"

    @property
    def aliases_prefix(self) -> str:
        return f"{self.root}aliases/"

    def alias(self, alias: str) -> str:
        return self.aliases_prefix + check_segment("alias", alias)

    @property
    def drains_prefix(self) -> str:
        return f"{self.root}drains/"

    def drain(self, server_id: str) -> str:
        return self.drains_prefix + check_segment("server id", server_id)

    @property
    def controller(self) -> str:
        return f"{self.root}controller"

    def parse(self, key: str) -> ParsedKey | None:
        """What `key` holds, or None for a key outside this layout (ignored by readers)."""
        if not key.startswith(self.root):
            return None
        parts = key[len(self.root):].split("/")
        if len(parts) == 2 and parts[0] == "collections" and parts[1]:
            return ParsedKey("collection", parts[1])
        if len(parts) == 2 and parts[0] == "servers" and parts[1]:
            return ParsedKey("server", parts[1])
        if len(parts) == 2 and parts[0] == "drains" and parts[1]:
            return ParsedKey("drain", parts[1])
        if len(parts) == 2 and parts[0] == "aliases" and parts[1]:
            return ParsedKey("alias", parts[1])
        # isdigit() alone also accepts digits int() refuses ("²") or reads as others ("١").
        if len(parts) == 3 and parts[0] == "shardmaps" and parts[1] and parts[2].isascii() and parts[2].isdigit():
            return ParsedKey("shard_map", parts[1], int(parts[2]))
        return None
