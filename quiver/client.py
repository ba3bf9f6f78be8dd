"""Python client for the Quiver router, sync (`Client`) and asyncio (`AsyncClient`).

Both speak the same protos through the same request builders and result parsers; they differ only in how
they call. gRPC failures surface as `quiver.errors` exceptions (InvalidArgument, NotFound, Unavailable,
...), chosen by status code. Large upserts are split into batches.

    with Client("127.0.0.1:7000") as client:
        client.create_collection("docs", dim=384, shards=3, model="all-MiniLM-L6-v2")
        client.upsert("docs", ids, vectors, metadata=[{"lang": "en"}, ...])
        hits = client.search("docs", query_vector, k=10, filter=Eq("lang", "en"))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import grpc
import numpy as np

from quiver.errors import ERRORS_BY_CODE, QuiverError
from quiver.filters import Filter, Metadata
from quiver.v1 import router_pb2, router_pb2_grpc, types_pb2
from quiver.wire.filters import filter_to_proto, metadata_from_proto, metadata_to_proto
from quiver.wire.specs import index_to_proto, metric_to_proto

DEFAULT_BATCH = 1000
_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    strategy: str
    partial: bool
    shards_asked: int
    shards_answered: int

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class Point:
    id: str
    metadata: Metadata
    vector: np.ndarray | None


def _error(error: grpc.RpcError) -> QuiverError:
    code = error.code() if hasattr(error, "code") else None
    return ERRORS_BY_CODE.get(code, QuiverError)(error.details() if hasattr(error, "details") else str(error))  # type: ignore[arg-type]


# -- request builders (shared by both clients) ------------------------------------------------------


def collection_spec(
    name: str, dim: int, metric: str = "cosine", index: str = "hnsw", index_params: dict[str, Any] | None = None,
    shards: int = 1, replication_factor: int = 1, model: str = "",
) -> router_pb2.CollectionSpec:
    return router_pb2.CollectionSpec(
        name=name, dim=dim, metric=metric_to_proto(metric), index=index_to_proto(index, index_params or {}),
        shards=shards, replication_factor=replication_factor, model=model,
    )


def _as_matrix(vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    return matrix[None, :] if matrix.ndim == 1 else matrix


def upsert_requests(
    collection: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata] | None,
    partition_key: str, model: str, batch_size: int,
) -> Iterator[router_pb2.RouterUpsertRequest]:
    matrix = _as_matrix(vectors)
    if len(matrix) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(matrix)} vectors")
    if metadata is not None and len(metadata) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(metadata)} metadata entries")
    for start in range(0, len(ids), batch_size):
        end = start + batch_size
        yield router_pb2.RouterUpsertRequest(
            collection=collection, ids=list(ids[start:end]), vectors=matrix[start:end].tobytes(),
            metadata=[metadata_to_proto(m) for m in metadata[start:end]] if metadata is not None else [],
            partition_key=partition_key, model=model,
        )


def search_request(
    collection: str, queries: np.ndarray, k: int, filter: Filter | None, ef_search: int, nprobe: int, exact: bool,
    include_metadata: bool, include_vectors: bool, partition_key: str, allow_partial: bool, model: str,
) -> router_pb2.RouterSearchRequest:
    request = router_pb2.RouterSearchRequest(
        collection=collection, queries=_as_matrix(queries).tobytes(), k=k,
        params=types_pb2.SearchParams(ef_search=ef_search, nprobe=nprobe, exact=exact),
        include_metadata=include_metadata, include_vectors=include_vectors,
        partition_key=partition_key, allow_partial=allow_partial, model=model,
    )
    if filter is not None:
        request.filter.CopyFrom(filter_to_proto(filter))
    return request


_STRATEGY_NAMES = {v: k.lower() for k, v in types_pb2.SearchStrategy.items()}


def search_results(response: router_pb2.RouterSearchResponse) -> list[SearchResult]:
    coverage = response.coverage
    out = []
    for result in response.results:
        metadata = [metadata_from_proto(m) for m in result.metadata] if len(result.metadata) else None
        vectors = np.frombuffer(result.vectors, dtype="<f4").reshape(len(result.ids), -1) if result.vectors else None
        hits = [
            Hit(i, s, metadata[n] if metadata else None, vectors[n] if vectors is not None else None)
            for n, (i, s) in enumerate(zip(result.ids, result.scores))
        ]
        out.append(SearchResult(hits, _STRATEGY_NAMES.get(result.strategy, "?"), coverage.partial, coverage.shards_asked, coverage.shards_answered))
    return out


def get_points(response: router_pb2.RouterGetResponse) -> list[Point]:
    return [
        Point(p.id, metadata_from_proto(p.metadata), np.frombuffer(p.vector, dtype="<f4") if p.vector else None)
        for p in response.points
    ]


def delete_request(collection: str, ids: Sequence[str] | None, filter: Filter | None, partition_key: str) -> router_pb2.RouterDeleteRequest:
    request = router_pb2.RouterDeleteRequest(collection=collection, ids=list(ids or []), partition_key=partition_key)
    if filter is not None:
        request.filter.CopyFrom(filter_to_proto(filter))
    return request


# -- the clients ------------------------------------------------------------------------------------


class Client:
    """Blocking client. One channel per client; thread-safe."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(address, options=_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self.timeout = timeout

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise _error(error) from None

    def create_collection(self, name: str, dim: int, **options: Any) -> router_pb2.CollectionInfo:
        request = router_pb2.CreateCollectionRequest(spec=collection_spec(name, dim, **options))
        return self._call(self._stub.CreateCollection, request).collection

    def describe_collection(self, name: str) -> router_pb2.CollectionInfo:
        return self._call(self._stub.DescribeCollection, router_pb2.DescribeCollectionRequest(name=name)).collection

    def list_collections(self) -> list[router_pb2.CollectionInfo]:
        return list(self._call(self._stub.ListCollections, router_pb2.ListCollectionsRequest()).collections)

    def drop_collection(self, name: str) -> None:
        self._call(self._stub.DropCollection, router_pb2.DropCollectionRequest(name=name))

    def upsert(
        self, collection: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata] | None = None,
        *, partition_key: str = "", model: str = "", batch_size: int = DEFAULT_BATCH,
    ) -> int:
        return sum(
            self._call(self._stub.Upsert, r).upserted
            for r in upsert_requests(collection, ids, vectors, metadata, partition_key, model, batch_size)
        )

    def delete(self, collection: str, ids: Sequence[str] | None = None, *, filter: Filter | None = None, partition_key: str = "") -> int:
        return int(self._call(self._stub.Delete, delete_request(collection, ids, filter, partition_key)).deleted)

    def get(self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, partition_key: str = "") -> list[Point]:
        request = router_pb2.RouterGetRequest(collection=collection, ids=list(ids), include_vectors=include_vectors, partition_key=partition_key)
        return get_points(self._call(self._stub.Get, request))

    def search(
        self, collection: str, queries: np.ndarray, k: int = 10, *, filter: Filter | None = None, ef_search: int = 0,
        nprobe: int = 0, exact: bool = False, include_metadata: bool = False, include_vectors: bool = False,
        partition_key: str = "", allow_partial: bool = False, model: str = "",
    ) -> list[SearchResult]:
        """One result per query row (a single vector is one query)."""
        request = search_request(collection, queries, k, filter, ef_search, nprobe, exact, include_metadata, include_vectors, partition_key, allow_partial, model)
        return search_results(self._call(self._stub.Search, request))

    def status(self) -> router_pb2.ClusterStatusResponse:
        return self._call(self._stub.ClusterStatus, router_pb2.ClusterStatusRequest())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client over grpc.aio; create it inside a running event loop."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self.timeout = timeout

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None

    async def create_collection(self, name: str, dim: int, **options: Any) -> router_pb2.CollectionInfo:
        request = router_pb2.CreateCollectionRequest(spec=collection_spec(name, dim, **options))
        return (await self._call(self._stub.CreateCollection, request)).collection

    async def describe_collection(self, name: str) -> router_pb2.CollectionInfo:
        return (await self._call(self._stub.DescribeCollection, router_pb2.DescribeCollectionRequest(name=name))).collection

    async def list_collections(self) -> list[router_pb2.CollectionInfo]:
        return list((await self._call(self._stub.ListCollections, router_pb2.ListCollectionsRequest())).collections)

    async def drop_collection(self, name: str) -> None:
        await self._call(self._stub.DropCollection, router_pb2.DropCollectionRequest(name=name))

    async def upsert(
        self, collection: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata] | None = None,
        *, partition_key: str = "", model: str = "", batch_size: int = DEFAULT_BATCH,
    ) -> int:
        total = 0
        for request in upsert_requests(collection, ids, vectors, metadata, partition_key, model, batch_size):
            total += (await self._call(self._stub.Upsert, request)).upserted
        return total

    async def delete(self, collection: str, ids: Sequence[str] | None = None, *, filter: Filter | None = None, partition_key: str = "") -> int:
        return int((await self._call(self._stub.Delete, delete_request(collection, ids, filter, partition_key))).deleted)

    async def get(self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, partition_key: str = "") -> list[Point]:
        request = router_pb2.RouterGetRequest(collection=collection, ids=list(ids), include_vectors=include_vectors, partition_key=partition_key)
        return get_points(await self._call(self._stub.Get, request))

    async def search(
        self, collection: str, queries: np.ndarray, k: int = 10, *, filter: Filter | None = None, ef_search: int = 0,
        nprobe: int = 0, exact: bool = False, include_metadata: bool = False, include_vectors: bool = False,
        partition_key: str = "", allow_partial: bool = False, model: str = "",
    ) -> list[SearchResult]:
        request = search_request(collection, queries, k, filter, ef_search, nprobe, exact, include_metadata, include_vectors, partition_key, allow_partial, model)
        return search_results(await self._call(self._stub.Search, request))

    async def status(self) -> router_pb2.ClusterStatusResponse:
        return await self._call(self._stub.ClusterStatus, router_pb2.ClusterStatusRequest())

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
