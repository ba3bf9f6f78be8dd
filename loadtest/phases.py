"""The phases of a load test against a running cluster, through the router with `AsyncClient`.

- Bulk load: create the collection (index, params, shards) and upsert the base vectors in batches,
  a few batches in flight, with a tqdm progress bar; vectors/s over the whole load.
- Query load: single-query searches, closed loop (C clients) or open loop (Poisson arrivals at a
  target rate, latency from the intended send time), for a fixed duration, optionally filtered, with
  an optional concurrent write stream.
- The write stream re-upserts existing points with their own vectors and metadata at a paced rate
  (open loop, batches of B points). Every write goes through the WAL and the index, yet the data stay
  the same, so the ground truth stays valid while writes run.

Point ids are the base row numbers as strings, so returned ids map straight back to rows.
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from loadtest.drivers import closed_loop, open_loop
from loadtest.outcomes import Returned, Tally
from loadtest.schedule import paced_offsets, poisson_offsets
from loadtest.workload import FILTER, Workload
from quiver.client import AsyncClient


@dataclass(frozen=True)
class CollectionSetup:
    name: str
    index: str = "hnsw"
    params: dict[str, int] = field(default_factory=dict)
    shards: int = 1
    replication_factor: int = 1


@dataclass(frozen=True)
class LoadResult:
    vectors: int
    seconds: float

    @property
    def vectors_per_s(self) -> float:
        return self.vectors / self.seconds if self.seconds > 0 else 0.0


async def bulk_load(
    client: AsyncClient, setup: CollectionSetup, workload: Workload, *, batch: int = 2000, concurrency: int = 4,
    progress: bool = True,
) -> LoadResult:
    data = workload.dataset
    await client.create_collection(
        setup.name, data.dim, metric=data.metric, index=setup.index, index_params=setup.params,
        shards=setup.shards, replication_factor=setup.replication_factor,
    )
    starts = iter(range(0, len(data.base), batch))
    bar = tqdm(total=len(data.base), unit="vec", unit_scale=True, desc=f"loading {setup.name}", disable=not progress, file=sys.stderr)

    async def loader() -> None:
        for start in starts:
            rows = range(start, min(start + batch, len(data.base)))
            await client.upsert(setup.name, [str(r) for r in rows], data.base[rows.start : rows.stop], workload.metadata(rows), batch_size=batch)
            bar.update(len(rows))

    began = time.perf_counter()
    try:
        await asyncio.gather(*(loader() for _ in range(concurrency)))
    finally:
        bar.close()
    await wait_until_trained(client, setup.name)
    return LoadResult(len(data.base), time.perf_counter() - began)


async def wait_until_trained(client: AsyncClient, collection: str, timeout: float = 3600.0) -> None:
    """IVF-PQ shards train in the background after the load; measuring before that would time the
    exact fallback, not the index."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await client.status()
        if all(r.trained for r in status.replicas if r.collection == collection):
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"collection {collection!r} was not trained within {timeout:.0f}s")


@dataclass(frozen=True)
class QuerySettings:
    mode: str = "closed"  # "closed" | "open"
    duration: float = 10.0
    concurrency: int = 1  # closed loop
    rate: float = 0.0  # open loop, queries/s
    max_inflight: int = 1000  # open loop
    warmup: float = 0.0
    ef_search: int = 0
    nprobe: int = 0
    allow_partial: bool = False
    write_rate: float = 0.0  # points/s
    write_batch: int = 10
    seed: int = 0
    keep_ids: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be closed or open, got {self.mode!r}")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open loop needs a target rate > 0")
        if self.duration <= 0:
            raise ValueError("duration must be positive")


@dataclass
class PhaseResult:
    settings: QuerySettings
    elapsed_s: float
    queries: Tally
    writes: Tally | None = None
    writes_elapsed_s: float | None = None
    # This process's CPU over the measured phase, in percent of one core: near 100 means the
    # generator, not the cluster, may be the bottleneck.
    generator_cpu_percent: float = 0.0


async def query_phase(client: AsyncClient, collection: str, workload: Workload, settings: QuerySettings) -> PhaseResult:
    if settings.warmup > 0:
        await _queries(client, collection, workload, settings, settings.warmup, Tally())
    tally = Tally(keep_ids=settings.keep_ids)
    cpu = time.process_time()
    if settings.write_rate <= 0:
        elapsed = await _queries(client, collection, workload, settings, settings.duration, tally)
        return PhaseResult(settings, elapsed, tally, generator_cpu_percent=_cpu_percent(cpu, elapsed))
    writes = Tally()
    elapsed, writes_elapsed = await asyncio.gather(
        _queries(client, collection, workload, settings, settings.duration, tally),
        _writes(client, collection, workload, settings, writes),
    )
    return PhaseResult(settings, elapsed, tally, writes, writes_elapsed, _cpu_percent(cpu, max(elapsed, writes_elapsed)))


def _cpu_percent(cpu_start: float, elapsed: float) -> float:
    return 100.0 * (time.process_time() - cpu_start) / elapsed if elapsed > 0 else 0.0


async def _queries(
    client: AsyncClient, collection: str, workload: Workload, settings: QuerySettings, duration: float, tally: Tally
) -> float:
    queries = workload.dataset.queries

    async def call(slot: int) -> tuple[int, bool, Any]:
        row, filtered = workload.query_of(slot)
        results = await client.search(
            collection, queries[row], workload.k, filter=FILTER if filtered else None, ef_search=settings.ef_search,
            nprobe=settings.nprobe, allow_partial=settings.allow_partial,
        )
        return row, filtered, results[0]

    def on_done(slot: int, latency: float, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            tally.failure(outcome)
            return
        row, filtered, result = outcome
        ids = tuple(result.ids)
        tally.success(latency, partial=result.partial, returned=Returned(row, filtered, ids), hits=workload.hits(row, filtered, ids))

    if settings.mode == "closed":
        return await closed_loop(call, on_done, concurrency=settings.concurrency, duration=duration)
    offsets = poisson_offsets(settings.rate, duration, np.random.default_rng(settings.seed))
    # The schedule spans the whole duration even when its last arrival comes early and finishes fast.
    return max(duration, await open_loop(call, on_done, offsets=offsets, max_inflight=settings.max_inflight))


async def _writes(client: AsyncClient, collection: str, workload: Workload, settings: QuerySettings, tally: Tally) -> float:
    base = workload.dataset.base
    rng = np.random.default_rng(settings.seed + 1)
    batch = settings.write_batch

    async def call(slot: int) -> int:
        rows = np.sort(rng.choice(len(base), size=min(batch, len(base)), replace=False))
        return await client.upsert(collection, [str(r) for r in rows], base[rows], workload.metadata(rows), batch_size=batch)

    def on_done(slot: int, latency: float, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            tally.failure(outcome)
        else:
            tally.success(latency, items=int(outcome))

    offsets = paced_offsets(settings.write_rate / batch, settings.duration)
    return max(settings.duration, await open_loop(call, on_done, offsets=offsets, max_inflight=settings.max_inflight))
