"""Every public RPC of the router and of a shard server, fuzzed with hypothesis against real processes:
wrong dimensions, NaN and infinity, empty and oversize batches, k = 0 and huge k, absurd ef/nprobe, deep,
wide and malformed filters, unknown enum values, invalid UTF-8 and odd characters in ids, duplicate ids,
raw garbage bytes. Every answer is OK or a caller's status (never UNKNOWN or INTERNAL) with a message a
person can read; after a refusal the data is unchanged (a digest of every partition's point count and
last LSN, and the collection list); and the servers stay up (health SERVING at the end).
"""
from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.local_cluster import LocalCluster
from quiver.v1 import router_pb2, router_pb2_grpc, shard_pb2, shard_pb2_grpc, types_pb2
from quiver.wire import search_outcomes

DIM = 8
N_POINTS = 60
CALLER_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
CASES: Counter[str] = Counter()


class Target:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.router_channel = grpc.insecure_channel(cluster.router_address, options=[("grpc.max_send_message_length", 128 * 2**20)])
        self.router = router_pb2_grpc.RouterStub(self.router_channel)
        self.shard_channels = [grpc.insecure_channel(s.address, options=[("grpc.max_send_message_length", 128 * 2**20)]) for s in cluster.shard_servers]
        self.shards = [shard_pb2_grpc.ShardStub(c) for c in self.shard_channels]

    def digest(self) -> tuple[Any, ...]:
        partitions = sorted(
            (p.spec.ref.collection, p.spec.ref.shard, p.spec.ref.version, p.point_count, p.last_lsn)
            for stub in self.shards for p in stub.Stats(shard_pb2.StatsRequest(), timeout=30).partitions
        )
        names = sorted(c.spec.name for c in self.router.ListCollections(router_pb2.ListCollectionsRequest(), timeout=30).collections)
        return tuple(partitions), tuple(names)

    def close(self) -> None:
        for channel in (self.router_channel, *self.shard_channels):
            channel.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    with LocalCluster(tmp_path_factory.mktemp("fuzz"), shards=2) as cluster:
        running = Target(cluster)
        rng = np.random.default_rng(0)
        for name, index in (("docs", types_pb2.IndexSpec(hnsw=types_pb2.HnswParams())), ("flat", types_pb2.IndexSpec(flat=types_pb2.FlatParams()))):
            spec = router_pb2.CollectionSpec(name=name, dim=DIM, index=index, shards=2, model="m1")
            running.router.CreateCollection(router_pb2.CreateCollectionRequest(spec=spec), timeout=60)
            vectors = rng.standard_normal((N_POINTS, DIM)).astype("<f4")
            metadata = [types_pb2.Metadata(fields={"n": types_pb2.Value(int_value=i), "tag": types_pb2.Value(string_value=f"t{i % 3}")}) for i in range(N_POINTS)]
            running.router.Upsert(router_pb2.RouterUpsertRequest(collection=name, ids=[f"p{i}" for i in range(N_POINTS)], vectors=vectors.tobytes(), metadata=metadata), timeout=60)
        yield running
        for name, service in (("router", ""), *((f"shard {i}", "") for i in range(len(running.shards)))):
            channel = running.router_channel if name == "router" else running.shard_channels[int(name.split()[1])]
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status
            assert status == health_pb2.HealthCheckResponse.SERVING, f"{name} is not serving after the fuzzing"
        print("\nfuzz cases per RPC:", dict(sorted(CASES.items())))
        running.close()


def answer(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def check(target: Target, name: str, call: Callable[[], Any]) -> None:
    CASES[name] += 1
    before = target.digest()
    code, details = answer(call)
    assert code in CALLER_CODES, f"{name}: {code.name} {details!r}"
    if code != grpc.StatusCode.OK:
        assert len(details) >= 10, f"{name}: {code.name} with no message a person could act on: {details!r}"
        assert target.digest() == before, f"{name}: refused with {code.name} ({details}) but the data changed"


# -- strategies -----------------------------------------------------------------------------------

odd_floats = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e38, -1e38, 1e-45, 3.4e38])
floats = st.one_of(st.floats(-10, 10, width=32), odd_floats)


@st.composite
def vector_bytes(draw, dim: int = DIM) -> bytes:  # type: ignore[no-untyped-def]
    """Packed float32 rows: the right shape or not, finite or not, or any bytes at all."""
    kind = draw(st.sampled_from(["rows", "rows", "wrong_length", "garbage", "empty", "many"]))
    if kind == "rows":
        n = draw(st.integers(1, 4))
        values = draw(st.lists(floats, min_size=n * dim, max_size=n * dim))
        return struct.pack(f"<{len(values)}f", *values)
    if kind == "wrong_length":
        return draw(st.binary(min_size=1, max_size=4 * dim * 2)).ljust(1, b"\0")[: 4 * dim + draw(st.sampled_from([-1, 1, 2, 3]))]
    if kind == "many":
        return np.ones((draw(st.sampled_from([1000, 20000])), dim), "<f4").tobytes()
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=64))


ids = st.lists(
    st.one_of(st.sampled_from(["p1", "p2", "", " ", "p1", "\x00", "a" * 5000, "é", "🙂", "../x", "p1\n"]), st.text(max_size=12)),
    max_size=6,
)
names = st.one_of(st.sampled_from(["docs", "flat", "", "nope", "a" * 300, "../etc", "docs\x00", "Docs"]), st.text(max_size=10))
fields = st.sampled_from(["n", "tag", "", "missing", "n.x", "\x00"])
values = st.one_of(
    st.builds(lambda v: types_pb2.Value(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: types_pb2.Value(float_value=v), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda v: types_pb2.Value(string_value=v), st.text(max_size=8)),
    st.builds(lambda v: types_pb2.Value(bool_value=v), st.booleans()),
    st.builds(lambda vs: types_pb2.Value(string_list=types_pb2.StringList(values=vs)), st.lists(st.text(max_size=4), max_size=3)),
    st.just(types_pb2.Value()),
)
range_bound = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


def _range(field: str, gt, gte, lt, lte) -> types_pb2.Filter:  # type: ignore[no-untyped-def]
    bounds = {name: value for name, value in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)) if value is not None}
    return types_pb2.Filter(range=types_pb2.FieldRange(field=field, **bounds))


leaf_filters = st.one_of(
    st.builds(lambda f, v: types_pb2.Filter(eq=types_pb2.FieldEq(field=f, value=v)), fields, values),
    st.builds(lambda f, vs: types_pb2.Filter(**{"in": types_pb2.FieldIn(field=f, values=vs)}), fields, st.lists(values, max_size=4)),
    st.builds(_range, fields, range_bound, range_bound, range_bound, range_bound),
    st.builds(lambda f: types_pb2.Filter(exists=types_pb2.FieldExists(field=f)), fields),
    st.builds(lambda f, v: types_pb2.Filter(contains=types_pb2.FieldContains(field=f, value=v)), fields, st.text(max_size=4)),
    st.just(types_pb2.Filter()),  # the oneof unset
)
filters = st.recursive(
    leaf_filters,
    lambda children: st.one_of(
        st.builds(lambda fs: types_pb2.Filter(**{"and": types_pb2.FilterList(filters=fs)}), st.lists(children, max_size=4)),
        st.builds(lambda fs: types_pb2.Filter(**{"or": types_pb2.FilterList(filters=fs)}), st.lists(children, max_size=4)),
        st.builds(lambda f: types_pb2.Filter(**{"not": f}), children),
    ),
    max_leaves=12,
)


def deep_filter(depth: int) -> types_pb2.Filter:
    inner = types_pb2.Filter(exists=types_pb2.FieldExists(field="n"))
    for _ in range(depth):
        inner = types_pb2.Filter(**{"not": inner})
    return inner


def wide_filter(width: int) -> types_pb2.Filter:
    leaves = [types_pb2.Filter(eq=types_pb2.FieldEq(field="n", value=types_pb2.Value(int_value=i))) for i in range(width)]
    return types_pb2.Filter(**{"or": types_pb2.FilterList(filters=leaves)})


any_filter = st.one_of(st.none(), filters, st.sampled_from([deep_filter(40), deep_filter(90), wide_filter(5000)]))
uint32 = st.one_of(st.sampled_from([0, 1, 10, 10_000, 10_001, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
metadata_lists = st.lists(st.builds(lambda f, v: types_pb2.Metadata(fields={f: v}), fields, values), max_size=5)
models = st.sampled_from(["", "m1", "m2", "\x00"])
params = st.builds(lambda ef, nprobe, exact: types_pb2.SearchParams(ef_search=ef, nprobe=nprobe, exact=exact), uint32, uint32, st.booleans())
index_specs = st.one_of(
    st.just(types_pb2.IndexSpec()),
    st.builds(lambda m, efc, ef: types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=m, ef_construction=efc, ef_search=ef)), uint32, uint32, uint32),
    st.builds(lambda nl, m, nb: types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=nl, m=m, nbits=nb)), uint32, uint32, uint32),
    st.just(types_pb2.IndexSpec(flat=types_pb2.FlatParams())),
)
metrics = st.sampled_from([0, 1, 2, 3, 99, 2**31 - 1])  # unknown enum values too


# Each field is most often valid, so that a request usually has one thing wrong with it and reaches the
# code behind the first check, not only the first check.
finite_rows = st.integers(1, 5).flatmap(
    lambda n: st.lists(st.floats(-10, 10, width=32).filter(lambda x: abs(x) > 1e-3), min_size=n * DIM, max_size=n * DIM)
).map(lambda values: struct.pack(f"<{len(values)}f", *values))
mostly_vectors = st.one_of(finite_rows, finite_rows, vector_bytes())
mostly_names = st.one_of(st.just("docs"), st.just("flat"), names)
mostly_k = st.one_of(st.integers(1, 20), uint32)
mostly_filter = st.one_of(st.none(), st.none(), any_filter)
mostly_model = st.one_of(st.just(""), st.just("m1"), models)
mostly_params = st.one_of(st.just(types_pb2.SearchParams()), params)
valid_ids = st.lists(st.text("abcdefgh", min_size=1, max_size=6), min_size=1, max_size=4, unique=True)
mostly_ids = st.one_of(valid_ids, ids)
mostly_metadata = st.one_of(st.just([]), metadata_lists)
mostly_key = st.sampled_from(["", "", "k1"])


def fuzz_name(prefix: str, n: int) -> str:
    return f"{prefix}{n}"


# -- the router -------------------------------------------------------------------------------------


@FUZZ
@given(name=mostly_names, ids=mostly_ids, vectors=mostly_vectors, metadata=mostly_metadata, key=mostly_key, model=mostly_model)
def test_router_upsert(target, name, ids, vectors, metadata, key, model) -> None:  # type: ignore[no-untyped-def]
    request = router_pb2.RouterUpsertRequest(collection=name, ids=ids, vectors=vectors, metadata=metadata, partition_key=key, model=model)
    check(target, "Router.Upsert", lambda: target.router.Upsert(request, timeout=30))


@FUZZ
@given(name=mostly_names, queries=mostly_vectors, k=mostly_k, flt=mostly_filter, params=mostly_params, key=mostly_key,
       model=mostly_model, partial=st.booleans(), md=st.booleans(), vec=st.booleans())
def test_router_search(target, name, queries, k, flt, params, key, model, partial, md, vec) -> None:  # type: ignore[no-untyped-def]
    request = router_pb2.RouterSearchRequest(collection=name, queries=queries, k=k, filter=flt, params=params, partition_key=key,
                                             model=model, allow_partial=partial, include_metadata=md, include_vectors=vec)
    check(target, "Router.Search", lambda: target.router.Search(request, timeout=30))


@FUZZ
@given(name=mostly_names, ids=mostly_ids, flt=mostly_filter, key=mostly_key)
def test_router_delete(target, name, ids, flt, key) -> None:  # type: ignore[no-untyped-def]
    # Deletes of the loaded points would change the data legitimately: aim them at ids nobody wrote.
    request = router_pb2.RouterDeleteRequest(collection=name, ids=[f"never-{i}" for i in ids], filter=flt if flt is None else _never(flt), partition_key=key)
    check(target, "Router.Delete", lambda: target.router.Delete(request, timeout=30))


@FUZZ
@given(name=mostly_names, ids=mostly_ids, vec=st.booleans(), key=mostly_key)
def test_router_get(target, name, ids, vec, key) -> None:  # type: ignore[no-untyped-def]
    request = router_pb2.RouterGetRequest(collection=name, ids=ids, include_vectors=vec, partition_key=key)
    check(target, "Router.Get", lambda: target.router.Get(request, timeout=30))


@FUZZ
@given(name=st.one_of(names.filter(lambda n: n not in ("docs", "flat")), st.builds(fuzz_name, st.just("fz"), st.integers(0, 5))),
       dim=uint32, metric=metrics, index=index_specs, shards=st.sampled_from([0, 1, 2, 3, 257, 2**32 - 1]),
       rf=st.sampled_from([0, 1, 2, 3, 2**32 - 1]), model=models, drop=st.booleans())
def test_router_create_describe_and_drop_collection(target, name, dim, metric, index, shards, rf, model, drop) -> None:  # type: ignore[no-untyped-def]
    spec = router_pb2.CollectionSpec(name=name, dim=dim, metric=metric, index=index, shards=shards, replication_factor=rf, model=model)
    CASES["Router.CreateCollection"] += 1
    code, details = answer(lambda: target.router.CreateCollection(router_pb2.CreateCollectionRequest(spec=spec), timeout=60))
    assert code in CALLER_CODES, f"CreateCollection: {code.name} {details!r}"
    check(target, "Router.DescribeCollection", lambda: target.router.DescribeCollection(router_pb2.DescribeCollectionRequest(name=name), timeout=30))
    check(target, "Router.ListCollections", lambda: target.router.ListCollections(router_pb2.ListCollectionsRequest(), timeout=30))
    check(target, "Router.ClusterStatus", lambda: target.router.ClusterStatus(router_pb2.ClusterStatusRequest(), timeout=30))
    if drop or code == grpc.StatusCode.OK:
        CASES["Router.DropCollection"] += 1
        dropped, details = answer(lambda: target.router.DropCollection(router_pb2.DropCollectionRequest(name=name), timeout=60))
        assert dropped in CALLER_CODES, f"DropCollection: {dropped.name} {details!r}"


@FUZZ
@given(alias=st.one_of(names.filter(lambda n: n not in ("docs", "flat")), st.sampled_from(["docs", "flat", "al"])), collection=mostly_names,
       expected=st.one_of(st.none(), mostly_names), absent=st.booleans(), delete=st.booleans())
def test_router_set_list_and_delete_alias(target, alias, collection, expected, absent, delete) -> None:  # type: ignore[no-untyped-def]
    request = router_pb2.SetAliasRequest(alias=alias, collection=collection, expected_collection=expected or "", expect_absent=absent)
    check(target, "Router.SetAlias", lambda: target.router.SetAlias(request, timeout=30))
    check(target, "Router.ListAliases", lambda: target.router.ListAliases(router_pb2.ListAliasesRequest(), timeout=30))
    if delete:
        check(target, "Router.DeleteAlias", lambda: target.router.DeleteAlias(router_pb2.DeleteAliasRequest(alias=alias), timeout=30))


def _never(flt: types_pb2.Filter) -> types_pb2.Filter:
    """`flt` and a clause no loaded point meets, so a delete by it may run but removes nothing."""
    never = types_pb2.Filter(eq=types_pb2.FieldEq(field="tag", value=types_pb2.Value(string_value="no-such-tag")))
    return types_pb2.Filter(**{"and": types_pb2.FilterList(filters=[flt, never])})


# -- a shard server ---------------------------------------------------------------------------------


refs = st.one_of(
    st.builds(lambda c, s, v: shard_pb2.PartitionRef(collection=c, shard=s, version=v), names, st.sampled_from([0, 1, 7, 2**32 - 1]), st.sampled_from([0, 1, 2, 2**32 - 1])),
    st.sampled_from([shard_pb2.PartitionRef(collection=c, shard=n, version=1) for c in ("docs", "flat") for n in (0, 1)]),
    st.sampled_from([shard_pb2.PartitionRef(collection=c, shard=n, version=1) for c in ("docs", "flat") for n in (0, 1)]),
)


@FUZZ
@given(ref=refs, ids=mostly_ids, vectors=mostly_vectors, metadata=mostly_metadata)
def test_shard_upsert(target, ref, ids, vectors, metadata) -> None:  # type: ignore[no-untyped-def]
    request = shard_pb2.UpsertRequest(ref=ref, ids=ids, vectors=vectors, metadata=metadata)
    check(target, "Shard.Upsert", lambda: target.shards[0].Upsert(request, timeout=30))


@FUZZ
@given(ref=refs, queries=mostly_vectors, k=mostly_k, flt=mostly_filter, params=mostly_params, md=st.booleans(), vec=st.booleans())
def test_shard_search(target, ref, queries, k, flt, params, md, vec) -> None:  # type: ignore[no-untyped-def]
    request = shard_pb2.SearchRequest(ref=ref, queries=queries, k=k, filter=flt, params=params, include_metadata=md, include_vectors=vec)
    check(target, "Shard.Search", lambda: target.shards[0].Search(request, timeout=30))


searches = st.builds(
    lambda ref, queries, k, flt, params, packed: shard_pb2.SearchRequest(ref=ref, queries=queries, k=k, filter=flt, params=params, packed_hits=packed),
    refs, mostly_vectors, mostly_k, mostly_filter, mostly_params, st.booleans(),
)


@FUZZ
@given(batch=st.lists(searches, max_size=4))
def test_shard_search_many(target, batch) -> None:  # type: ignore[no-untyped-def]
    """The call answers; each search in it is answered or refused with a caller's status and a reason."""
    CASES["Shard.SearchMany"] += 1
    many = target.shards[0].SearchMany(shard_pb2.SearchManyRequest(searches=batch), timeout=30)
    assert len(many.outcomes) == len(batch)
    for outcome in many.outcomes:
        code = search_outcomes.code_of(outcome)
        assert code in CALLER_CODES, f"SearchMany: {code.name} {outcome.message!r}"
        assert code == grpc.StatusCode.OK or len(outcome.message) >= 10, f"SearchMany: {code.name} {outcome.message!r}"


@FUZZ
@given(ref=refs, ids=mostly_ids, flt=mostly_filter, vec=st.booleans())
def test_shard_delete_get_stats_train_and_snapshot(target, ref, ids, flt, vec) -> None:  # type: ignore[no-untyped-def]
    shard = target.shards[0]
    delete = shard_pb2.DeleteRequest(ref=ref, ids=[f"never-{i}" for i in ids], filter=flt if flt is None else _never(flt))
    check(target, "Shard.Delete", lambda: shard.Delete(delete, timeout=30))
    check(target, "Shard.Get", lambda: shard.Get(shard_pb2.GetRequest(ref=ref, ids=ids, include_vectors=vec), timeout=30))
    check(target, "Shard.Stats", lambda: shard.Stats(shard_pb2.StatsRequest(ref=ref), timeout=30))
    check(target, "Shard.ListPartitions", lambda: shard.ListPartitions(shard_pb2.ListPartitionsRequest(), timeout=30))
    CASES["Shard.Train"] += 1
    code, details = answer(lambda: shard.Train(shard_pb2.TrainRequest(ref=ref), timeout=30))
    assert code in CALLER_CODES, f"Train: {code.name} {details!r}"
    CASES["Shard.Snapshot"] += 1
    code, details = answer(lambda: shard.Snapshot(shard_pb2.SnapshotRequest(ref=ref), timeout=30))
    assert code in CALLER_CODES, f"Snapshot: {code.name} {details!r}"


@FUZZ
@given(name=st.builds(fuzz_name, st.just("sfz"), st.integers(0, 3)), shard=st.sampled_from([0, 1, 2**32 - 1]),
       version=st.sampled_from([0, 1, 2**32 - 1]), dim=uint32, metric=metrics, index=index_specs, model=models, drop=st.booleans())
def test_shard_create_and_drop_partition(target, name, shard, version, dim, metric, index, model, drop) -> None:  # type: ignore[no-untyped-def]
    ref = shard_pb2.PartitionRef(collection=name, shard=shard, version=version)
    spec = shard_pb2.PartitionSpec(ref=ref, dim=dim, metric=metric, index=index, model=model)
    CASES["Shard.CreatePartition"] += 1
    code, details = answer(lambda: target.shards[1].CreatePartition(shard_pb2.CreatePartitionRequest(spec=spec), timeout=60))
    assert code in CALLER_CODES, f"CreatePartition: {code.name} {details!r}"
    if drop or code == grpc.StatusCode.OK:
        CASES["Shard.DropPartition"] += 1
        dropped, details = answer(lambda: target.shards[1].DropPartition(shard_pb2.DropPartitionRequest(ref=ref), timeout=60))
        assert dropped in CALLER_CODES, f"DropPartition: {dropped.name} {details!r}"


@FUZZ
@given(name=mostly_names, expected=st.sampled_from([0, 1, 2, 2**32 - 1]), target_version=st.sampled_from([0, 1, 2, 7, 2**32 - 1]),
       version=st.sampled_from([0, 1, 2, 2**32 - 1]), force=st.booleans())
def test_router_version_calls(target, name, expected, target_version, version, force) -> None:  # type: ignore[no-untyped-def]
    """The fixture's collections have one version, v1, active: no cutover, rollback or retirement can apply,
    and each must say why; listing versions and builds answers for any name."""
    router = target.router
    check(target, "Router.ListVersions", lambda: router.ListVersions(router_pb2.ListVersionsRequest(collection=name), timeout=30))
    check(target, "Router.ReindexStatus", lambda: router.ReindexStatus(router_pb2.ReindexStatusRequest(collection=name), timeout=30))
    if target_version != 1:  # a cutover to the active version itself would be a no-op switch, not a refusal
        check(target, "Router.Cutover", lambda: router.Cutover(
            router_pb2.CutoverRequest(collection=name, expected_active=expected, target=target_version, force=force), timeout=30))
    check(target, "Router.Rollback", lambda: router.Rollback(router_pb2.RollbackRequest(collection=name, expected_active=expected, force=force), timeout=30))
    check(target, "Router.RetireVersion", lambda: router.RetireVersion(router_pb2.RetireVersionRequest(collection=name, version=version), timeout=30))


@FUZZ
@given(ref=refs, after=st.sampled_from([-(2**63), -2, -1, 0, 5, 2**62]), limit=uint32, ids_only=st.booleans(),
       lsn=st.sampled_from([0, 1, 59, 2**63, 2**64 - 1]), max_bytes=uint32)
def test_shard_read_only_log_and_replica_calls(target, ref, after, limit, ids_only, lsn, max_bytes) -> None:  # type: ignore[no-untyped-def]
    """The calls a primary, a catching-up replica or a verifier make that read and change nothing (a term of
    0 only asks): any partition ref, slot, page size, LSN and byte budget gets an answer or a reason."""
    shard = target.shards[0]
    check(target, "Shard.ReplicaStatus", lambda: shard.ReplicaStatus(shard_pb2.ReplicaStatusRequest(ref=ref, term=0), timeout=30))
    check(target, "Shard.Digest", lambda: shard.Digest(shard_pb2.DigestRequest(ref=ref), timeout=30))
    check(target, "Shard.ExportPoints", lambda: shard.ExportPoints(
        shard_pb2.ExportPointsRequest(ref=ref, after_slot=after, limit=limit, ids_only=ids_only), timeout=30))
    check(target, "Shard.ReadLog", lambda: shard.ReadLog(shard_pb2.ReadLogRequest(ref=ref, after_lsn=lsn, max_bytes=max_bytes), timeout=30))


# -- bytes that are not a message at all ------------------------------------------------------------

SHARD_METHODS = [m.name for m in shard_pb2.DESCRIPTOR.services_by_name["Shard"].methods]
ROUTER_METHODS = [m.name for m in router_pb2.DESCRIPTOR.services_by_name["Router"].methods]
INVALID_UTF8_ID = shard_pb2.UpsertRequest(ref=shard_pb2.PartitionRef(collection="docs", version=1)).SerializeToString() + b"\x12\x02\xff\xfe"


@FUZZ
@given(service_method=st.one_of(st.sampled_from([("quiver.v1.Shard", m) for m in SHARD_METHODS]),
                                st.sampled_from([("quiver.v1.Router", m) for m in ROUTER_METHODS])),
       junk=st.one_of(st.binary(min_size=1, max_size=200), st.sampled_from([b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f", INVALID_UTF8_ID, b"\x12\x02\xff\xfe"])))
def test_raw_garbage_and_invalid_utf8_are_invalid_argument(target, service_method, junk) -> None:  # type: ignore[no-untyped-def]
    service, method = service_method
    channel = target.router_channel if service.endswith("Router") else target.shard_channels[0]
    call = channel.unary_unary(f"/{service}/{method}")
    if method.startswith(("Drop", "Create")):
        return  # garbage that happens to parse could name a real collection: create/drop are fuzzed above
    check(target, f"raw {method}", lambda: call(junk, timeout=30))
