"""The load the chaos run keeps up while faults come and go: writers, a monotonic reader, a searcher.

All of them call the router's gRPC service directly, with no retries, so each call's outcome is the one
the ledger records. Writes are single points: fresh ids `k{seq}`, and every fourth write overwrites one of
eight hot ids `h{n}` with a newer version, so lost updates and stale reads show too.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import grpc
import numpy as np

from quiver.v1 import router_pb2, router_pb2_grpc
from quiver.wire.filters import metadata_from_proto, metadata_to_proto
from router.hashring import shard_for_key
from tests.chaos.ledger import Ledger, Write, is_definite_refusal, now

COLLECTION = "chaos"
DIM = 8
HOT_IDS = 8


def vector_of(seq: int) -> np.ndarray:
    return np.random.default_rng(seq).standard_normal(DIM).astype("<f4")


def point_of(seq: int) -> str:
    return f"h{seq % HOT_IDS}" if seq % 4 == 0 else f"k{seq}"


@dataclass
class Workload:
    stub: router_pb2_grpc.RouterStub
    ledger: Ledger
    shards: int
    fault: str = "none"  # the fault in force now, which searches are counted under
    _seq: int = 0
    _stopped: bool = False

    def stop(self) -> None:
        self._stopped = True

    async def run(self, writers: int = 2) -> None:
        await asyncio.gather(*(self._writer() for _ in range(writers)), self._reader(), self._searcher())

    async def _writer(self) -> None:
        while not self._stopped:
            self._seq += 1
            seq = self._seq
            point_id = point_of(seq)
            write = Write(seq, point_id, shard_for_key(point_id, self.shards), now())
            self.ledger.writes.append(write)
            request = router_pb2.RouterUpsertRequest(
                collection=COLLECTION, ids=[point_id], vectors=vector_of(seq).tobytes(), metadata=[metadata_to_proto({"v": seq})],
            )
            try:
                await self.stub.Upsert(request, timeout=1.5)
                self.ledger.acknowledge(write)
            except grpc.aio.AioRpcError as error:
                write.error = f"{error.code().name}: {error.details()}"
                write.outcome = "refused" if is_definite_refusal(error.code(), error.details() or "") else "uncertain"
            write.done = now()
            await asyncio.sleep(0.005 if write.outcome == "acked" else 0.05)

    async def _reader(self) -> None:
        """Reads acknowledged points back through the router: each must show at least the newest version
        acknowledged before the read began, and never less than a version acknowledged that it saw before."""
        seen: dict[str, int] = {}  # id -> highest acknowledged version this reader has seen
        rng = random.Random(7)
        while not self._stopped:
            # Everything acknowledged so far was acknowledged before this read is sent (no await between).
            acked = self.ledger.newest_acked
            if not acked:
                await asyncio.sleep(0.02)
                continue
            ids = rng.sample(list(acked), min(32, len(acked)))
            floors = {point_id: acked[point_id] for point_id in ids}
            try:
                reply = await self.stub.Get(router_pb2.RouterGetRequest(collection=COLLECTION, ids=ids), timeout=1.0)
            except grpc.aio.AioRpcError:
                self.ledger.reads_failed += 1
                await asyncio.sleep(0.05)
                continue
            self.ledger.reads_ok += 1
            versions = {p.id: int(metadata_from_proto(p.metadata)["v"]) for p in reply.points}
            acked_versions = self.ledger.acked_seqs
            for point_id in ids:
                version = versions.get(point_id)
                floor = max(floors[point_id], seen.get(point_id, 0))
                if version is None or version < floor:
                    self.ledger.read_violations.append(
                        f"{point_id}: read {version} after version {floor} was acknowledged (fault {self.fault})")
                elif version in acked_versions:
                    seen[point_id] = max(seen.get(point_id, 0), version)
            await asyncio.sleep(0.02)

    async def _searcher(self) -> None:
        """Searches under a 200 ms deadline; a success answers from every shard."""
        while not self._stopped:
            query = vector_of(random.randrange(1, max(self._seq, 2)))
            fault = self.fault
            try:
                reply = await self.stub.Search(
                    router_pb2.RouterSearchRequest(collection=COLLECTION, queries=query.tobytes(), k=5), timeout=0.2)
                failure = f"partial coverage: {reply.coverage}" if reply.coverage.partial else None
            except grpc.aio.AioRpcError as error:
                failure = f"{error.code().name}: {error.details()}"
            self.ledger.note_search(fault, failure)
            await asyncio.sleep(0.015)
