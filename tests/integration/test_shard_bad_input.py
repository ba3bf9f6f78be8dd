"""Each kind of bad input gets its gRPC status and a message, and leaves the data unchanged."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from quiver.validation import MAX_STORED_ID_BYTES
from quiver.v1 import shard_pb2, types_pb2
from tests.shard_harness import packed, ref, running_shard, spec

DIM = 8


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def filter_without_kind() -> types_pb2.Filter:
    f = types_pb2.Filter()
    getattr(f, "and").filters.add()  # an and with an empty (kind-less) clause
    return f


BAD_CALLS = {
    "wrong dimension": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=packed(np.ones((1, DIM + 1)))), grpc.StatusCode.INVALID_ARGUMENT),
    "fewer vectors than ids": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a", "b"], vectors=packed(vecs(1))), grpc.StatusCode.INVALID_ARGUMENT),
    "nan": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=packed(np.full((1, DIM), np.nan))), grpc.StatusCode.INVALID_ARGUMENT),
    "inf": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=packed(np.full((1, DIM), np.inf))), grpc.StatusCode.INVALID_ARGUMENT),
    "zero vector under cosine": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=packed(np.zeros((1, DIM)))), grpc.StatusCode.INVALID_ARGUMENT),
    "duplicate ids in a batch": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a", "a"], vectors=packed(vecs(2))), grpc.StatusCode.INVALID_ARGUMENT),
    "empty id": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=[""], vectors=packed(vecs(1))), grpc.StatusCode.INVALID_ARGUMENT),
    # The shard stores keyed points under (key, id): its limit is the router's id limit plus room for a key.
    "id over the stored-id limit": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["é" * (MAX_STORED_ID_BYTES // 2 + 1)], vectors=packed(vecs(1))), grpc.StatusCode.INVALID_ARGUMENT),
    "metadata count mismatch": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a", "b"], vectors=packed(vecs(2)), metadata=[types_pb2.Metadata()]), grpc.StatusCode.INVALID_ARGUMENT),
    "nan metadata": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=packed(vecs(1)), metadata=[types_pb2.Metadata(fields={"x": types_pb2.Value(float_value=float("nan"))})]), grpc.StatusCode.INVALID_ARGUMENT),
    "k = 0": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(1)), k=0), grpc.StatusCode.INVALID_ARGUMENT),
    "k above maximum": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(1)), k=100_000), grpc.StatusCode.INVALID_ARGUMENT),
    "query wrong dimension": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(np.ones((1, DIM - 1))), k=1), grpc.StatusCode.INVALID_ARGUMENT),
    "zero query under cosine": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(np.zeros((1, DIM))), k=1), grpc.StatusCode.INVALID_ARGUMENT),
    "packed hits with metadata": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(2)), k=1, packed_hits=True, include_metadata=True), grpc.StatusCode.INVALID_ARGUMENT),
    "packed hits with vectors": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(2)), k=1, packed_hits=True, include_vectors=True), grpc.StatusCode.INVALID_ARGUMENT),
    "malformed filter": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(1)), k=1, filter=filter_without_kind()), grpc.StatusCode.INVALID_ARGUMENT),
    "range without bounds": ("Search", lambda: shard_pb2.SearchRequest(ref=ref(), queries=packed(vecs(1)), k=1, filter=types_pb2.Filter(range=types_pb2.FieldRange(field="x"))), grpc.StatusCode.INVALID_ARGUMENT),
    "eq with a list value": ("Delete", lambda: shard_pb2.DeleteRequest(ref=ref(), filter=types_pb2.Filter(eq=types_pb2.FieldEq(field="x", value=types_pb2.Value(string_list=types_pb2.StringList(values=["a"]))))), grpc.StatusCode.INVALID_ARGUMENT),
    "delete with nothing named": ("Delete", lambda: shard_pb2.DeleteRequest(ref=ref()), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown collection": ("Search", lambda: shard_pb2.SearchRequest(ref=ref("nope"), queries=packed(vecs(1)), k=1), grpc.StatusCode.NOT_FOUND),
    "unknown version": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(version=9), ids=["a"], vectors=packed(vecs(1))), grpc.StatusCode.NOT_FOUND),
    "oversize message": ("Upsert", lambda: shard_pb2.UpsertRequest(ref=ref(), ids=["a"], vectors=b"\0" * (2 * 2**20)), grpc.StatusCode.RESOURCE_EXHAUSTED),
}


@pytest.fixture(scope="module")
def seeded_ids() -> list[str]:
    return [f"s{i}" for i in range(50)]


async def test_each_bad_input_returns_its_status_and_changes_nothing(tmp_path, seeded_ids):
    base = vecs(len(seeded_ids), seed=1)
    async with running_shard(tmp_path, max_message_bytes=2**20) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM)))
        await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=seeded_ids, vectors=packed(base)))
        before = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:3]), k=5))
        for name, (method, make, code) in BAD_CALLS.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await getattr(stub, method)(make())
            assert raised.value.code() == code, f"{name}: {raised.value.code()} {raised.value.details()}"
            assert raised.value.details(), f"{name}: no message"
        after = await stub.Search(shard_pb2.SearchRequest(ref=ref(), queries=packed(base[:3]), k=5))
        stats = (await stub.Stats(shard_pb2.StatsRequest(ref=ref()))).partitions[0]
    assert stats.point_count == len(seeded_ids)
    assert [list(r.ids) for r in after.results] == [list(r.ids) for r in before.results]


async def test_partition_definitions_are_checked_and_create_is_idempotent(tmp_path):
    async with running_shard(tmp_path) as (_, stub):
        first = await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM)))
        again = await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(DIM)))
        assert first.created and not again.created
        cases = {
            "different definition": (spec(DIM + 1), grpc.StatusCode.ALREADY_EXISTS),
            "bad name": (spec(DIM, collection="../etc"), grpc.StatusCode.INVALID_ARGUMENT),
            "zero dim": (spec(0, collection="z"), grpc.StatusCode.INVALID_ARGUMENT),
            "pq m not dividing dim": (
                spec(DIM, types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(m=3)), collection="pq"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        }
        for name, (bad, code) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=bad))
            assert raised.value.code() == code, name
        listed = await stub.ListPartitions(shard_pb2.ListPartitionsRequest())
        assert [p.ref.collection for p in listed.partitions] == ["docs"]
