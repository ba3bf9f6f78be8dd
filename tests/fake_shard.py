"""A fake shard server for router tests: real gRPC on loopback, exact search in numpy, programmable faults.

The router is what these tests examine, so the shard behind it only has to be right and observable: it
keeps each partition's points in a dict, answers searches by brute force (cosine vectors normalised at
upsert, as the real shard does), and records every request it receives. A test can make any method slow
(`delay`), hold it until told (`freeze` / `release`) or fail with a gRPC code (`fail`); the fault in force
when a request arrives is the one it gets. Faults, like the log, are per method name ("Search", "Get").

`fake_cluster` starts N fakes registered in a real etcd and a real RouterServer over them.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from quiver.client import AsyncClient
from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.store import ClusterStore
from quiver.errors import AlreadyExists, InvalidArgument, NotFound, QuiverError, grpc_status_for, trailing_metadata_for
from quiver.filters import Metadata, matches
from quiver.rpc_guard import status_of
from quiver.v1 import router_pb2_grpc, shard_pb2, shard_pb2_grpc, types_pb2
from quiver.validation import check_k, prepare_vectors
from quiver.wire.filters import filter_from_proto, metadata_from_proto, metadata_to_proto
from quiver.wire.packed_hits import HitBatch
from quiver.wire import search_outcomes
from quiver.wire.points import vectors_from_bytes
from quiver.wire.specs import metric_from_proto
from router.config import RouterConfig
from router.server import RouterServer

PartitionKey = tuple[str, int, int]


def key_of(ref: shard_pb2.PartitionRef) -> PartitionKey:
    return (ref.collection, ref.shard, ref.version)


@dataclass
class FakePartition:
    spec: shard_pb2.PartitionSpec
    points: dict[str, tuple[np.ndarray, Metadata]] = field(default_factory=dict)  # id -> (stored vector, metadata)

    @property
    def metric(self) -> str:
        return metric_from_proto(self.spec.metric)


class FakeShard(shard_pb2_grpc.ShardServicer):
    def __init__(self, max_queries_per_request: int = 10_000, max_k: int = 10_000) -> None:
        # The real shard's default limits (shard/config.py), so batches the router builds meet the same checks.
        self.max_queries_per_request = max_queries_per_request
        self.max_k = max_k
        # Answers a search that asks for packed hits in them, as shard servers do; False plays a server too old
        # to know the field (it answers in messages, as it always did).
        self.packs_hits = True
        self.partitions: dict[PartitionKey, FakePartition] = {}
        self.peers: list[FakeShard] = []  # the other fakes of the cluster, which a write with a term reaches too
        self.log: list[tuple[str, Any]] = []
        self._delays: dict[str, float] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._errors: dict[str, grpc.StatusCode | QuiverError] = {}
        self.server: grpc.aio.Server | None = None
        self.address = ""

    # -- programming ---------------------------------------------------------------------------------

    def delay(self, method: str, seconds: float) -> None:
        self._delays[method] = seconds

    def freeze(self, method: str) -> None:
        """Requests of `method` that arrive from now on wait until `release(method)`."""
        self._gates[method] = asyncio.Event()

    def release(self, method: str) -> None:
        gate = self._gates.pop(method, None)
        if gate is not None:
            gate.set()

    def fail(self, method: str, code: grpc.StatusCode | QuiverError) -> None:
        """Answer `method` with this status, or as the real shard answers this error (with its metadata)."""
        self._errors[method] = code

    def heal(self) -> None:
        """No more faults; frozen requests go on."""
        for method in list(self._gates):
            self.release(method)
        self._delays.clear()
        self._errors.clear()

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.log if name == method]

    def data_requests(self) -> list[tuple[str, Any]]:
        """Everything but partition lifecycle and stats: what a routed read or write sends."""
        return [(name, r) for name, r in self.log if name in ("Upsert", "Delete", "Get", "Search")]

    def point_ids(self, collection: str, shard: int | None = None) -> set[str]:
        return {
            i for (name, number, _), p in self.partitions.items()
            if name == collection and shard in (None, number) for i in p.points
        }

    # -- serving -------------------------------------------------------------------------------------

    async def start(self) -> "FakeShard":
        self.server = grpc.aio.server()
        shard_pb2_grpc.add_ShardServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        await self.server.start()
        return self

    async def stop(self) -> None:
        """Stop serving, releasing frozen requests first; the router's calls then fail UNAVAILABLE."""
        self.heal()
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    async def _serve(self, method: str, request: Any, context: grpc.aio.ServicerContext, answer: Any) -> Any:
        self.log.append((method, request))
        gate, delay, code = self._gates.get(method), self._delays.get(method, 0.0), self._errors.get(method)
        if gate is not None:
            await gate.wait()
        if delay:
            await asyncio.sleep(delay)
        try:
            if isinstance(code, QuiverError):
                raise code
            if code is not None:
                await context.abort(code, f"injected {code.name} in {method}")
            return answer(request)
        except QuiverError as error:  # answered as the real shard's rpc_guard answers it
            await context.abort(grpc_status_for(error), str(error), trailing_metadata_for(error))

    def _partition(self, ref: shard_pb2.PartitionRef) -> FakePartition:
        partition = self.partitions.get(key_of(ref))
        if partition is None:
            raise NotFound(f"partition {key_of(ref)} does not exist")
        return partition

    def _create(self, request: shard_pb2.CreatePartitionRequest) -> shard_pb2.CreatePartitionResponse:
        key = key_of(request.spec.ref)
        existing = self.partitions.get(key)
        if existing is not None:
            if existing.spec == request.spec:
                return shard_pb2.CreatePartitionResponse(created=False)
            raise AlreadyExists(f"partition {key} already exists with a different definition")
        self.partitions[key] = FakePartition(request.spec)
        return shard_pb2.CreatePartitionResponse(created=True)

    def _drop(self, request: shard_pb2.DropPartitionRequest) -> shard_pb2.DropPartitionResponse:
        self._partition(request.ref)
        del self.partitions[key_of(request.ref)]
        return shard_pb2.DropPartitionResponse()

    def _replicate(self, request: Any, apply: Any) -> None:
        """A write with a term comes to a primary: apply it to the peers holding the partition too, as a real
        primary's replication would before answering (the fake does it at once, in-process)."""
        if request.term:
            for peer in self.peers:
                if peer is not self and key_of(request.ref) in peer.partitions:
                    apply(peer, request)

    def _upsert(self, request: shard_pb2.UpsertRequest) -> shard_pb2.UpsertResponse:
        self._replicate(request, lambda peer, r: peer._upsert(shard_pb2.UpsertRequest(ref=r.ref, ids=r.ids, vectors=r.vectors, metadata=r.metadata)))
        partition = self._partition(request.ref)
        vectors = prepare_vectors(vectors_from_bytes(request.vectors, partition.spec.dim, len(request.ids), "vectors"), partition.metric)
        metadata = [metadata_from_proto(m) for m in request.metadata] or [{} for _ in request.ids]
        for point_id, vector, md in zip(request.ids, vectors, metadata):
            partition.points[point_id] = (vector, md)
        return shard_pb2.UpsertResponse(upserted=len(request.ids))

    def _delete(self, request: shard_pb2.DeleteRequest) -> shard_pb2.DeleteResponse:
        self._replicate(request, lambda peer, r: peer._delete(shard_pb2.DeleteRequest(ref=r.ref, ids=r.ids, filter=r.filter)))
        partition = self._partition(request.ref)
        flt = filter_from_proto(request.filter)
        doomed = {i for i in request.ids if i in partition.points}
        if flt is not None:
            doomed |= {i for i, (_, md) in partition.points.items() if matches(flt, md)}
        for point_id in doomed:
            del partition.points[point_id]
        return shard_pb2.DeleteResponse(deleted=len(doomed))

    def _get(self, request: shard_pb2.GetRequest) -> shard_pb2.GetResponse:
        partition = self._partition(request.ref)
        points = []
        for point_id in dict.fromkeys(request.ids):
            if point_id in partition.points:
                vector, md = partition.points[point_id]
                point = types_pb2.Point(id=point_id, metadata=metadata_to_proto(md))
                if request.include_vectors:
                    point.vector = vector.astype("<f4").tobytes()
                points.append(point)
        return shard_pb2.GetResponse(points=points)

    def _search(self, request: shard_pb2.SearchRequest) -> shard_pb2.SearchResponse:
        partition = self._partition(request.ref)
        queries = vectors_from_bytes(request.queries, partition.spec.dim, None, "queries")
        if len(queries) > self.max_queries_per_request:
            raise InvalidArgument(f"{len(queries)} queries; the maximum is {self.max_queries_per_request}")
        check_k(request.k, self.max_k)
        flt = filter_from_proto(request.filter)
        chosen = [(i, v, md) for i, (v, md) in partition.points.items() if flt is None or matches(flt, md)]
        ids = [i for i, _, _ in chosen]
        stored = np.array([v for _, v, _ in chosen], dtype=np.float32).reshape(len(chosen), partition.spec.dim)
        results = []
        for query in prepare_vectors(queries, partition.metric, "queries"):
            if partition.metric == "l2":
                scores = -((stored - query) ** 2).sum(axis=1)
            else:
                scores = stored @ query
            top = np.argsort(-scores, kind="stable")[: request.k]
            result = types_pb2.QueryResult(
                ids=[ids[t] for t in top], scores=scores[top].tolist(),
                strategy=types_pb2.EXACT_FILTERED if flt is not None else types_pb2.EXACT,
            )
            if request.include_metadata:
                result.metadata.extend(metadata_to_proto(chosen[t][2]) for t in top)
            if request.include_vectors:
                result.vectors = stored[top].astype("<f4").tobytes()
            results.append(result)
        if request.packed_hits and self.packs_hits:
            return shard_pb2.SearchResponse(hits=HitBatch.from_results(results).to_proto())
        return shard_pb2.SearchResponse(results=results)

    def _stats(self, request: shard_pb2.StatsRequest) -> shard_pb2.StatsResponse:
        chosen = [self._partition(request.ref)] if request.ref.collection else list(self.partitions.values())
        return shard_pb2.StatsResponse(
            partitions=[shard_pb2.PartitionStats(spec=p.spec, point_count=len(p.points), trained=True) for p in chosen]
        )

    async def CreatePartition(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("CreatePartition", request, context, self._create)

    async def DropPartition(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("DropPartition", request, context, self._drop)

    async def ListPartitions(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve(
            "ListPartitions", request, context, lambda r: shard_pb2.ListPartitionsResponse(partitions=[p.spec for p in self.partitions.values()])
        )

    async def Upsert(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("Upsert", request, context, self._upsert)

    async def Delete(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("Delete", request, context, self._delete)

    async def Get(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("Get", request, context, self._get)

    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("Search", request, context, self._search)

    async def Stats(self, request, context):  # type: ignore[no-untyped-def]
        return await self._serve("Stats", request, context, self._stats)

    async def SearchMany(self, request, context):  # type: ignore[no-untyped-def]
        """As the real shard: each search answered or refused on its own. Each is logged as the Search it
        stands for, and a fault programmed for "Search" is each one's (a delay or freeze, the call's)."""
        def answer(many: shard_pb2.SearchManyRequest) -> shard_pb2.SearchManyResponse:
            outcomes = []
            for search in many.searches:
                code = self._errors.get("Search")
                try:
                    if isinstance(code, QuiverError):
                        raise code
                    if code is not None:
                        outcomes.append(search_outcomes.refused(code, f"injected {code.name} in Search"))
                        continue
                    outcomes.append(search_outcomes.answered(self._search(search)))
                except QuiverError as error:
                    outcomes.append(search_outcomes.refused(*status_of(error, "SearchMany")))
            return shard_pb2.SearchManyResponse(outcomes=outcomes)

        # Logged on arrival, as a lone Search is, so a test waiting for searches to reach a frozen shard sees
        # them; unless SearchMany itself is made to fail (a server too old for it, say): then none arrived.
        if "SearchMany" not in self._errors:
            self.log.extend(("Search", search) for search in request.searches)
        gate, delay = self._gates.get("Search"), self._delays.get("Search", 0.0)
        if gate is not None:
            await gate.wait()
        if delay:
            await asyncio.sleep(delay)
        return await self._serve("SearchMany", request, context, answer)


# -- a router over fakes -----------------------------------------------------------------------------


@dataclass
class FakeCluster:
    fakes: list[FakeShard]
    router: RouterServer
    store: ClusterStore  # a separate etcd connection, to inspect what the router wrote
    client: AsyncClient
    stub: router_pb2_grpc.RouterStub  # for requests the client would refuse to build
    registrations: list[Any] = field(default_factory=list)  # fake n's presence in etcd; close() = gone

    def client_with_deadline(self, seconds: float) -> AsyncClient:
        return AsyncClient(self.router.address, timeout=seconds)

    def clear_logs(self) -> None:
        for fake in self.fakes:
            fake.log.clear()

    def data_requests(self) -> list[tuple[str, Any]]:
        return [entry for fake in self.fakes for entry in fake.data_requests()]


@contextlib.asynccontextmanager
async def fake_cluster(etcd_endpoint: str, etcd_root: str, servers: int = 3, **router_options: Any) -> AsyncIterator[FakeCluster]:
    """`servers` fakes registered in etcd as fake-0, fake-1, ... and a RouterServer over them."""
    async with contextlib.AsyncExitStack() as stack:
        etcd = stack.enter_context(contextlib.closing(EtcdClient([etcd_endpoint], timeout=5.0)))
        store = ClusterStore(etcd, etcd_root)
        fakes, registrations = [], []
        for n in range(servers):
            fake = await FakeShard().start()
            stack.push_async_callback(fake.stop)
            registration = await store.register_server(f"fake-{n}", fake.address, ttl=30)
            stack.push_async_callback(_close_once, registration)
            fakes.append(fake)
            registrations.append(registration)
        for fake in fakes:
            fake.peers = fakes
        router = RouterServer(RouterConfig(etcd_endpoints=(etcd_endpoint,), etcd_root=etcd_root, port=0, **router_options))
        await router.start()
        stack.push_async_callback(router.stop, 0)
        client = await stack.enter_async_context(AsyncClient(router.address, timeout=10.0))
        channel = grpc.aio.insecure_channel(router.address)
        stack.push_async_callback(channel.close)
        yield FakeCluster(fakes, router, store, client, router_pb2_grpc.RouterStub(channel), registrations)


async def _close_once(registration: Any) -> None:
    if not getattr(registration, "closed_by_test", False):
        await registration.close()


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, rows: Any = None) -> list[int]:
    """Row numbers of the exact cosine top-k of `query` among `rows` (all rows when None)."""
    rows = np.arange(len(vectors)) if rows is None else np.asarray(sorted(rows))
    normed = vectors[rows] / np.linalg.norm(vectors[rows], axis=1, keepdims=True)
    scores = normed @ (query / np.linalg.norm(query))
    return rows[np.argsort(-scores, kind="stable")[:k]].tolist()
