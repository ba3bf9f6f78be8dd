"""Brute-force top-k in numpy (BLAS): the exact path for selective filters, flat indexes and re-ranking."""
from __future__ import annotations

import numpy as np

from shard.indexes.base import SearchHits


def score_matrix(queries: np.ndarray, vectors: np.ndarray, space: str) -> np.ndarray:
    """Scores (higher is better) of every query against every vector."""
    dots = queries @ vectors.T
    if space == "ip":
        return dots
    q_norms = np.einsum("ij,ij->i", queries, queries)
    v_norms = np.einsum("ij,ij->i", vectors, vectors)
    return 2.0 * dots - q_norms[:, None] - v_norms[None, :]


# Bounds the query x candidate score matrix (float32) of one chunk to ~256 MiB.
_MAX_SCORES = 64 * 2**20


def exact_topk(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int, space: str) -> SearchHits:
    """Top-k of `vectors` (whose labels are `labels`) for each query, padded to k."""
    rows = max(1, _MAX_SCORES // max(len(labels), 1))
    if len(queries) > rows:
        parts = [_exact_topk(queries[i : i + rows], vectors, labels, k, space) for i in range(0, len(queries), rows)]
        return SearchHits(np.concatenate([p.scores for p in parts]), np.concatenate([p.labels for p in parts]))
    return _exact_topk(queries, vectors, labels, k, space)


def _exact_topk(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, k: int, space: str) -> SearchHits:
    n = queries.shape[0]
    hits = SearchHits.empty(n, k)
    if len(labels) == 0 or k == 0:
        return hits
    scores = score_matrix(queries, vectors, space).astype(np.float32, copy=False)
    take = min(k, len(labels))
    if take < len(labels):
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(len(labels)), (n, take))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    hits.scores[:, :take] = np.take_along_axis(part_scores, order, axis=1)
    hits.labels[:, :take] = labels[best]
    return hits
