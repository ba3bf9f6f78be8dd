"""Real test data: a GloVe-50 subset (see shared/data/README.md) with deterministic synthetic metadata."""
from __future__ import annotations

import functools

import numpy as np

from loadtest.datasets import Dataset, load_glove50


@functools.cache
def glove_subset(n_base: int = 20_000, n_queries: int = 200) -> Dataset:
    return load_glove50(n_base=n_base, n_queries=n_queries, gt_k=100)


def selectivity_metadata(n: int, seed: int = 7) -> list[dict[str, object]]:
    """Fields whose equality filters select about 50%, 5%, 0.5% and 0.05% of points."""
    rng = np.random.default_rng(seed)
    draws = rng.random((n, 4))
    return [
        {
            "half": bool(d[0] < 0.5),
            "bucket20": int(d[1] * 20),  # eq 0 selects 5%
            "rare": "yes" if d[2] < 0.005 else "no",
            "tiny": "yes" if d[3] < 0.0005 else "no",
            "price": float(round(d[0] * 100, 2)),
            "tags": ("red",) if d[1] < 0.3 else ("blue", "green"),
        }
        for d in draws
    ]
