"""The same index in-process, without the cluster: the baseline a sweep's frontier is compared with.

It is the shard's own adapter (`shard.indexes.create_index`) with the same kind and parameters, fed
the same vectors (normalised under cosine, as a shard does). Queries go one at a time from one
thread, the ann-benchmarks convention, so its QPS is what one core does with no network, no
fan-out and no merge; the cluster's QPS in the same chart uses every core the cluster was given.
"""
from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np

from loadtest.datasets import Dataset
from loadtest.latency import LatencyHistogram
from shard.indexes import IndexConfig, QueryKnobs, VectorIndex, create_index

NOTE = "in-process adapter (shard.indexes), one thread, one query at a time, unfiltered"


def _prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(out)
    return out


def build_raw(dataset: Dataset, kind: str, params: dict[str, int]) -> tuple[VectorIndex, float]:
    """The built index and its build wall seconds."""
    config = IndexConfig(kind, dataset.dim, "l2" if dataset.metric == "l2" else "ip", dict(params))
    index = create_index(config)
    base = _prepared(dataset.base, dataset.metric)
    started = time.perf_counter()
    index.add(np.arange(len(base), dtype=np.int64), base)
    if not index.trained:
        index.train(None)
    return index, time.perf_counter() - started


def measure_raw(
    index: VectorIndex, dataset: Dataset, k: int, knob: str, value: int, duration: float
) -> dict[str, Any]:
    """Cycle through the queries one at a time for `duration` seconds (at least one call)."""
    queries = _prepared(dataset.queries, dataset.metric)
    knobs = QueryKnobs(**{knob: value})
    latency = LatencyHistogram()
    hits = calls = 0
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        started = time.perf_counter()
        deadline = started + duration
        while calls == 0 or time.perf_counter() < deadline:
            row = calls % len(queries)
            sent = time.perf_counter()
            labels = index.search(queries[row : row + 1], k, knobs, None).labels[0]
            latency.record(time.perf_counter() - sent)
            truth = dataset.ground_truth[row, :k]
            hits += len(set(truth[truth >= 0].tolist()) & set(labels[labels >= 0].tolist()))
            calls += 1
        elapsed = time.perf_counter() - started
    finally:
        faiss.omp_set_num_threads(threads)
    summary = latency.summary()
    return {
        "value": value, "recall": hits / (calls * k), "qps": calls / elapsed, "p50_ms": summary["p50"],
        "p99_ms": summary["p99"], "errors": 0,
    }
