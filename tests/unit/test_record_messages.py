"""The control-plane records refuse bad values with messages that name the field and the value, since an
operator reading a refused create or an unreadable etcd record acts on exactly that text."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from quiver.control_plane.records import SCHEMA, CollectionRecord, Replica, ServerRecord, ShardMap, ShardPlacement
from quiver.errors import FailedPrecondition, InvalidArgument

GOOD = CollectionRecord(
    name="docs", dim=8, metric="cosine", index_kind="hnsw", index_params={}, shards=2, replication_factor=1, model="",
    active_version=1, previous_version=None, created_unix=0.0,
)


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "a b"}, "collection name 'a b' must not contain"),
    ({"name": ""}, "collection name must be 1 to"),
    ({"dim": 0}, "dim must be a positive integer, got 0"),
    ({"shards": True}, "shards must be a positive integer, got True"),
    ({"replication_factor": -1}, "replication_factor must be a positive integer, got -1"),
    ({"metric": "hamming"}, "metric must be one of cosine, ip, l2, got 'hamming'"),
    ({"index_kind": "lsh"}, "index kind must be one of "),
    ({"index_params": []}, "index_params must be a JSON object, got []"),
    ({"active_version": -2}, "active_version must be a non-negative integer, got -2"),
    ({"previous_version": "1"}, "previous_version must be a non-negative integer, got '1'"),
])
def test_a_bad_collection_record_names_the_field_and_the_value(change, message):
    with pytest.raises(InvalidArgument) as refused:
        dataclasses.replace(GOOD, **change)
    assert str(refused.value).startswith(message), str(refused.value)


def test_the_index_kind_message_lists_the_kinds():
    with pytest.raises(InvalidArgument, match=r"index kind must be one of (\w+, )+\w+, got 'lsh'"):
        dataclasses.replace(GOOD, index_kind="lsh")


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ShardMap("a/b", 1), "collection name 'a/b' must not contain"),
    (lambda: ShardMap("docs", -1), "shard map version must be a non-negative integer, got -1"),
    (lambda: ShardMap("docs", 3, (ShardPlacement(1, (Replica("s", "serving"),)),)),
     "shard map of 'docs' v3: entry 0 is for shard 1; shards must be listed as 0..n-1 in order"),
    (lambda: ServerRecord("", "h:1", 0.0), "server id must be 1 to"),
])
def test_a_bad_shard_map_or_server_record_names_what_is_wrong(build, message):
    with pytest.raises(InvalidArgument) as refused:
        build()
    assert str(refused.value).startswith(message), str(refused.value)


def record(kind_fields: dict) -> bytes:
    return json.dumps({"schema": SCHEMA, **kind_fields}).encode()


@pytest.mark.parametrize(("parse", "data", "message"), [
    (CollectionRecord.from_json, b"{not json", "collection record in etcd is not valid JSON"),
    (CollectionRecord.from_json, b"[1]", "collection record in etcd is not a JSON object"),
    (CollectionRecord.from_json, record({"name": "docs"}), "collection record in etcd lacks field(s) dim, metric"),
    (ShardMap.from_json, b"{not json", "shard map record in etcd is not valid JSON"),
    (ShardMap.from_json, record({"collection": "docs"}), "shard map record in etcd lacks field(s) version, shards"),
    (ShardMap.from_json, record({"collection": "docs", "version": 1, "shards": [{"shard": 0}]}),
     "shard map record in etcd is malformed"),
    (ServerRecord.from_json, json.dumps({"schema": SCHEMA + 1}).encode(), f"server record in etcd has schema {SCHEMA + 1}"),
])
def test_an_unreadable_etcd_record_says_which_kind_and_why(parse, data, message):
    with pytest.raises(FailedPrecondition) as refused:
        parse(data)
    assert str(refused.value).startswith(message), str(refused.value)
    assert not re.search(r"\bNone\b", str(refused.value))
