"""Partition keys, declared when a collection is created (the name of the metadata field holding the key).

In a keyed collection a point is identified by (key, id): every write and keyed read names its key, all of
a key's points live on the key's shard, and a keyed search sees only that key's points. On the shards a
point's stored id is `stored_id(key, id)`, a length-prefixed pair that no two (key, id) pairs share, and
its metadata holds the key under the declared field; the router turns stored ids back into the caller's
ids in every answer. A collection without a declared key refuses `partition_key` (routing by a key that
is not part of a point's identity is what let one id live on two shards).
"""
from __future__ import annotations

from quiver.errors import InvalidArgument
from quiver.v1 import types_pb2

MAX_KEY_CHARS = 128


def check_key(collection: str, field: str, key: str, what: str, *, required: bool) -> None:
    """A request's partition_key, as its collection's declaration allows or needs it."""
    if not field:
        if key:
            raise InvalidArgument(
                f"collection {collection!r} declares no partition key, so {what} cannot name one; create the "
                "collection with partition_key_field to route by key"
            )
        return
    if not key and required:
        raise InvalidArgument(
            f"collection {collection!r} is partitioned by metadata field {field!r}: every {what} must name its "
            "partition_key (a point is identified by its key and id)"
        )
    if len(key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"partition_key is {len(key)} characters; the maximum is {MAX_KEY_CHARS}")


def stored_id(key: str, point_id: str) -> str:
    return f"{len(key)}:{key}:{point_id}"


def caller_id(stored: str) -> str:
    """The caller's id of a stored id (ids of unkeyed collections pass through)."""
    length, sep, rest = stored.partition(":")
    if not sep or not length.isdigit():
        return stored
    return rest[int(length) + 1:]


def key_of(stored: str) -> str | None:
    """The partition key a stored id carries (None for ids of unkeyed collections)."""
    length, sep, rest = stored.partition(":")
    if not sep or not length.isdigit():
        return None
    return rest[: int(length)]


def key_filter(field: str, key: str, caller_filter: types_pb2.Filter) -> types_pb2.Filter:
    """The caller's filter, restricted to one key's points."""
    own = types_pb2.Filter(eq=types_pb2.FieldEq(field=field, value=types_pb2.Value(string_value=key)))
    if caller_filter.WhichOneof("kind") is None:
        return own
    return types_pb2.Filter(**{"and": types_pb2.FilterList(filters=[own, caller_filter])})


def with_key(metadata: types_pb2.Metadata, field: str, key: str, position: int) -> types_pb2.Metadata:
    """A point's metadata with its key under the declared field (refusing a different value there)."""
    existing = metadata.fields.get(field) if field in metadata.fields else None
    if existing is not None and (existing.WhichOneof("kind") != "string_value" or existing.string_value != key):
        raise InvalidArgument(
            f"metadata[{position}] sets {field!r}, the collection's partition key field, to something other than "
            f"the request's partition_key {key!r}; leave it out (the key is stored there) or make them equal"
        )
    tagged = types_pb2.Metadata()
    tagged.CopyFrom(metadata)
    tagged.fields[field].string_value = key
    return tagged
