"""Turn a dataset name on the command line into a `Dataset` with exact ground truth, cached.

    glove-50              GloVe 6B 50-d, cosine, the ann-benchmarks split (loadtest.datasets.load_glove50)
    gaussian:N:DIM[:C]    the structured synthetic mixture (loadtest.datasets.gaussian_mixture), C
                          clusters (default 256), fixed seed; N may be written 1e6, 10M, 300k
    PATH                  .npy/.fvecs/.bvecs base vectors, or an ann-benchmarks .hdf5 file (train/test/
                          neighbors; needs h5py); queries from --queries-file, else a fixed-seed hold-out
                          of rows; ground truth from --ground-truth (.ivecs/.npy), the hdf5 neighbors, or
                          computed

Ground truth that is computed (datasets.exact_ground_truth) is cached next to the GloVe cache
($QUIVER_CACHE, else ~/.cache/quiver), keyed by what determines it, because for millions of vectors
it is the slowest step of a run.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from loadtest.datasets import (
    Dataset,
    _cache_dir,
    _save_atomic,
    exact_ground_truth,
    gaussian_mixture,
    load_glove50,
    load_vectors_file,
)

GAUSSIAN_SEED = 7
GAUSSIAN_CLUSTERS = 256
HOLDOUT_SEED = 3
_HDF5_METRICS = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_count(text: str) -> int:
    """'1000000', '1_000_000', '1e6', '1M', '300k' -> int."""
    match = re.fullmatch(r"\s*([0-9_.eE+]+?)\s*([kKmMbB]?)\s*", text)
    if not match:
        raise ValueError(f"not a count: {text!r}")
    value = float(match.group(1).replace("_", "")) * _SCALE[match.group(2).lower()]
    if value != int(value) or value < 1:
        raise ValueError(f"not a positive whole count: {text!r}")
    return int(value)


def is_synthetic(name: str) -> bool:
    return name.startswith("gaussian:")


def resolve_dataset(
    name: str,
    *,
    n_queries: int,
    gt_k: int,
    metric: str | None = None,
    n_base: int | None = None,
    queries_file: Path | None = None,
    ground_truth_file: Path | None = None,
    cache_dir: Path | None = None,
) -> Dataset:
    if name == "glove-50":
        if metric not in (None, "cosine"):
            raise ValueError("glove-50 is a cosine dataset")
        return load_glove50(n_base=n_base, n_queries=n_queries, gt_k=gt_k, cache_dir=cache_dir)
    if is_synthetic(name):
        parts = name.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"expected gaussian:N:DIM[:CLUSTERS], got {name!r}")
        n, dim = parse_count(parts[1]), int(parts[2])
        clusters = int(parts[3]) if len(parts) == 4 else GAUSSIAN_CLUSTERS
        data = gaussian_mixture(n, dim, clusters, GAUSSIAN_SEED, n_queries, metric or "l2", gt_k=0)
        truth = cached_ground_truth(f"{data.name}-q{n_queries}", data.base, data.queries, gt_k, data.metric, cache_dir)
        return Dataset(data.name, data.metric, data.base, data.queries, truth)
    return _file_dataset(Path(name), n_queries, gt_k, metric, queries_file, ground_truth_file, cache_dir)


def cached_ground_truth(
    key: str, base: np.ndarray, queries: np.ndarray, k: int, metric: str, cache_dir: Path | None
) -> np.ndarray:
    """Exact top-k of `queries` over `base`, computed once per key and then read from the cache."""
    path = _cache_dir(cache_dir) / f"gt-{key}-{metric}-k{k}.npy"
    if path.exists():
        truth = np.load(path)
        if truth.shape == (len(queries), k):
            return truth
    truth = exact_ground_truth(base, queries, k, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(path, truth)
    return truth


def _file_dataset(
    path: Path, n_queries: int, gt_k: int, metric: str | None, queries_file: Path | None,
    ground_truth_file: Path | None, cache_dir: Path | None,
) -> Dataset:
    if not path.exists():
        raise ValueError(f"{path}: no such file (and not glove-50 or gaussian:N:DIM)")
    truth: np.ndarray | None = None
    if path.suffix.lower() in (".hdf5", ".h5"):
        base, queries, truth, file_metric = _read_hdf5(path)
        metric = metric or file_metric
    else:
        base = load_vectors_file(path)
        queries = load_vectors_file(queries_file) if queries_file is not None else None
    metric = metric or "l2"
    if queries is None:
        base, queries = _hold_out(base, n_queries)
    queries = queries[:n_queries]
    if ground_truth_file is not None:
        truth = load_vectors_file(ground_truth_file).astype(np.int64)
    if truth is not None:
        truth = truth[: len(queries)]
        if truth.shape[1] < gt_k:
            raise ValueError(f"ground truth has {truth.shape[1]} neighbours per query, fewer than k={gt_k}")
        truth = truth[:, :gt_k]
    else:
        stat = path.resolve().stat()
        digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{queries_file}|{len(queries)}".encode()).hexdigest()[:16]
        truth = cached_ground_truth(f"{path.stem}-{digest}", base, queries, gt_k, metric, cache_dir)
    return Dataset(path.stem, metric, base, queries, truth)


def _hold_out(vectors: np.ndarray, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed set of rows as queries; the rest, in file order, as the base."""
    if not 1 <= n_queries < len(vectors):
        raise ValueError(f"cannot hold out {n_queries} queries from {len(vectors)} vectors")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(vectors))
    return vectors[np.sort(order[n_queries:])], vectors[order[:n_queries]]


def _read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str | None]:
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading .hdf5 needs h5py (pip install h5py)") from None
    with h5py.File(path, "r") as f:
        base = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        queries = np.ascontiguousarray(f["test"][:], dtype=np.float32)
        truth = np.asarray(f["neighbors"][:], dtype=np.int64) if "neighbors" in f else None
        distance = f.attrs.get("distance")
    metric = _HDF5_METRICS.get(distance.decode() if isinstance(distance, bytes) else distance) if distance else None
    return base, queries, truth, metric
