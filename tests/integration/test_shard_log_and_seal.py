"""ReadLog and SealWrites, the two shard RPCs a reindex needs besides ExportPoints: the log after an LSN,
in order, as the partition logged it (a filter delete as the ids it matched); and a seal that refuses every
write from then on and answers an LSN covering every write the partition acknowledged."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from quiver.errors import refusal_of
from quiver.v1 import shard_pb2, types_pb2
from shard.durable_partition import DurabilityPolicy
from tests.data_fixtures import glove_subset
from tests.shard_harness import packed, ref, running_shard, spec


async def read_all(stub, after: int) -> list[shard_pb2.LoggedWrite]:
    records = []
    while True:
        reply = await stub.ReadLog(shard_pb2.ReadLogRequest(ref=ref(), after_lsn=after, max_bytes=2000))
        if not reply.writes:
            return records
        assert len(reply.writes) < 40, "a page far over its byte limit"
        for write in reply.writes:
            assert write.lsn == after + 1, "records out of order or with a gap"
            after = write.lsn
            records.append(write)


async def test_the_log_read_after_an_lsn_holds_every_later_write_in_order_with_filter_deletes_as_ids(tmp_path):
    base = glove_subset().base[:60]
    async with running_shard(tmp_path) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        first = await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}" for i in range(20)], vectors=packed(base[:20])))
        for i in range(20, 60):  # small records, so pages of 2000 bytes hold several, not all
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}"], vectors=packed(base[i:i + 1])))
        await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=["p3", "p30"]))
        by_filter = types_pb2.Filter(**{"not": types_pb2.Filter(exists=types_pb2.FieldExists(field="missing"))})
        await stub.Delete(shard_pb2.DeleteRequest(ref=ref(), filter=by_filter))
        records = await read_all(stub, first.lsn)
        upserted = [r.ids[0] for r in records if not r.delete]
        deletes = [list(r.ids) for r in records if r.delete]
        assert upserted == [f"p{i}" for i in range(20, 60)]
        assert deletes[0] == ["p3", "p30"]
        assert sorted(deletes[1]) == sorted(f"p{i}" for i in range(60) if i not in (3, 30))
        vectors = np.stack([np.frombuffer(r.vectors, dtype="<f4") for r in records if not r.delete])
        normalised = base[20:60] / np.linalg.norm(base[20:60], axis=1, keepdims=True)
        assert np.allclose(vectors, normalised, atol=1e-6)
        at_end = await stub.ReadLog(shard_pb2.ReadLogRequest(ref=ref(), after_lsn=records[-1].lsn))
        assert not at_end.writes and at_end.last_lsn == records[-1].lsn


async def test_reading_past_the_end_or_before_a_trimmed_start_is_refused_with_what_to_do(tmp_path):
    base = glove_subset().base[:10]
    # Tiny segments, so a snapshot has whole segments to trim.
    async with running_shard(tmp_path, durability=DurabilityPolicy(wal_segment_bytes=512)) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        reply = await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}" for i in range(5)], vectors=packed(base[:5])))
        try:
            await stub.ReadLog(shard_pb2.ReadLogRequest(ref=ref(), after_lsn=reply.lsn + 5))
            raise AssertionError("a read past the end was answered")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE and "past the end" in error.details()
        for i in range(5, 10):  # snapshots kept: 2, so the log is trimmed up to the older of the last two
            await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}"], vectors=packed(base[i:i + 1])))
            await stub.Snapshot(shard_pb2.SnapshotRequest(ref=ref()))
        try:
            await stub.ReadLog(shard_pb2.ReadLogRequest(ref=ref(), after_lsn=0))
            raise AssertionError("a read of trimmed records was answered")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "start again from an export" in error.details()


async def test_a_sealed_partition_refuses_writes_and_its_seal_lsn_covers_every_acknowledged_write(tmp_path):
    base = glove_subset().base[:400]
    # Every write decoded off the event loop: some are past the seal's check but not yet logged when it lands.
    async with running_shard(tmp_path, offload_points=0) as (_, stub):
        await stub.CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec(base.shape[1])))
        acknowledged: list[int] = []
        refused: list[str] = []

        async def writer(n: int) -> None:
            for i in range(n, len(base), 4):
                try:
                    reply = await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=[f"p{i}"], vectors=packed(base[i:i + 1])))
                    acknowledged.append(reply.lsn)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    # Marked, so a router tells a seal from a server that is down without reading the text.
                    assert refusal_of(error.trailing_metadata()) == "sealed"
                    refused.append(error.details())
                await asyncio.sleep(0)

        writers = [asyncio.ensure_future(writer(n)) for n in range(4)]
        await asyncio.sleep(0.05)
        sealed = await stub.SealWrites(shard_pb2.SealWritesRequest(ref=ref(), sealed=True, reason="cutover of docs to v2"))
        await asyncio.gather(*writers)
        assert acknowledged and refused, "the seal landed before or after every write; the test proves nothing"
        assert max(acknowledged) <= sealed.last_lsn
        assert "sealed against writes: cutover of docs to v2" in refused[0] and "nothing was applied" in refused[0]
        deleting = stub.Delete(shard_pb2.DeleteRequest(ref=ref(), ids=["p0"]))
        try:
            await deleting
            raise AssertionError("a sealed partition took a delete")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        stats = await stub.ReadLog(shard_pb2.ReadLogRequest(ref=ref(), after_lsn=sealed.last_lsn))
        assert stats.last_lsn == sealed.last_lsn and not stats.writes
        await stub.SealWrites(shard_pb2.SealWritesRequest(ref=ref(), sealed=False))
        reply = await stub.Upsert(shard_pb2.UpsertRequest(ref=ref(), ids=["again"], vectors=packed(base[:1])))
        assert reply.lsn == sealed.last_lsn + 1
