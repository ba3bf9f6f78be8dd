"""Brute-force top-k in numpy (BLAS): the exact path for selective filters, flat indexes and re-ranking.

Scoring runs in chunks of candidates, keeping a running top-k per query, so the extra memory of one search
is bounded by `CHUNK_BYTES` of candidate vectors plus a bounded score block, whatever the partition's size:
the candidates' vectors are never gathered into one copy. Callers hand over a `fetch(labels)` that returns
one chunk's vectors (a view of the raw arena where it can be, `get_items` of hnswlib otherwise).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from shard.indexes.base import SearchHits

Fetch = Callable[[np.ndarray], np.ndarray]

# A chunk of candidate vectors (float32) fetched at once; its score block is bounded by _MAX_SCORES.
CHUNK_BYTES = 4 * 2**20
# Bounds the query x candidate score block (float32) of one step to ~64 MiB.
_MAX_SCORES = 16 * 2**20


def score_matrix(queries: np.ndarray, vectors: np.ndarray, space: str) -> np.ndarray:
    """Scores (higher is better) of every query against every vector."""
    dots = queries @ vectors.T
    if space == "ip":
        return dots
    q_norms = np.einsum("ij,ij->i", queries, queries)
    v_norms = np.einsum("ij,ij->i", vectors, vectors)
    return 2.0 * dots - q_norms[:, None] - v_norms[None, :]


MIN_CHUNK_ROWS = 64


def chunk_rows(dim: int) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (4 * max(dim, 1)))


def exact_topk(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int, space: str) -> SearchHits:
    """Top-k of `vectors` (whose labels are `labels`, both already in memory) for each query, padded to k."""
    rows = chunk_rows(queries.shape[1])
    chunks = ((labels[i : i + rows], vectors[i : i + rows]) for i in range(0, len(labels), rows))
    return topk_over_chunks(queries, chunks, k, space)


def exact_topk_of(queries: np.ndarray, labels: np.ndarray, fetch: Fetch, k: int, space: str) -> SearchHits:
    """Top-k among `labels`, fetching their vectors a chunk at a time."""
    rows = chunk_rows(queries.shape[1])
    chunks = ((labels[i : i + rows], fetch(labels[i : i + rows])) for i in range(0, len(labels), rows))
    return topk_over_chunks(queries, chunks, k, space)


def exact_topk_masked(queries: np.ndarray, mask: np.ndarray, fetch: Fetch, k: int, space: str) -> SearchHits:
    """Top-k among the labels where `mask` is true, walking the mask a chunk of labels at a time, so not even
    a label list as long as the partition is made."""
    rows = chunk_rows(queries.shape[1])
    labels = (np.flatnonzero(mask[i : i + rows]) + i for i in range(0, len(mask), rows))
    return topk_over_chunks(queries, ((chunk, fetch(chunk)) for chunk in labels), k, space)


def topk_over_chunks(queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int, space: str) -> SearchHits:
    """Top-k over (labels, vectors) chunks, merged as they come; ties keep the earlier chunk's candidate."""
    n = len(queries)
    hits = SearchHits.empty(n, k)
    if k == 0 or n == 0:
        return hits
    for labels, vectors in chunks:
        if len(labels) == 0:
            continue
        for start, stop in _query_blocks(n, len(labels)):
            scores = score_matrix(queries[start:stop], vectors, space).astype(np.float32, copy=False)
            _merge(hits, start, stop, scores, labels, k)
    return hits


def _query_blocks(n: int, candidates: int) -> Iterator[tuple[int, int]]:
    rows = max(1, _MAX_SCORES // max(candidates, 1))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def _merge(hits: SearchHits, start: int, stop: int, scores: np.ndarray, labels: np.ndarray, k: int) -> None:
    """Fold one block of scores into hits[start:stop]'s running top-k (kept sorted, best first)."""
    rows = stop - start
    take = min(k, scores.shape[1])
    if take < scores.shape[1]:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), (rows, take))
    block_scores = np.take_along_axis(scores, part, axis=1)
    block_labels = labels[part]
    # Current best first, so a tie keeps what was found first; empty slots (-inf, -1) sort last.
    all_scores = np.concatenate([hits.scores[start:stop], block_scores], axis=1)
    all_labels = np.concatenate([hits.labels[start:stop], block_labels], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    hits.scores[start:stop] = np.take_along_axis(all_scores, order, axis=1)
    hits.labels[start:stop] = np.take_along_axis(all_labels, order, axis=1)
