"""Shadow verification of an index version before cutover: a query file replayed against it and against the
active version, through the router (searches pinned to a version).

Reported: the new version's recall@k against exact search on that same version (what its index loses), its
overlap@k with the active version's answers (how much the answers users see will change), and p50/p99 of
both, each query sent alone so the latencies are a single caller's. A cutover can be refused below an
SRE's thresholds (`check_thresholds`); when the two versions hold different embedding models, their
answers are not comparable and overlap is not measured.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Verification:
    collection: str
    version: int
    active: int
    k: int
    queries: int
    recall: float  # mean recall@k of `version` against exact search on `version`
    overlap: float | None  # mean overlap@k of `version`'s answers with the active version's (None: models differ)
    p50_ms: float
    p99_ms: float
    active_p50_ms: float
    active_p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.array(samples) * 1e3, q)), 3) if samples else 0.0


def verify_version(client: Any, collection: str, version: int, queries: np.ndarray, k: int = 10) -> Verification:
    """Replay `queries` (n x dim) against `version` and the active version of `collection` through `client`
    (quiver.client.Client)."""
    listed = client.versions(collection)
    infos = {v.version: v for v in listed.versions}
    if version not in infos:
        raise ValueError(f"collection {collection!r} has no version {version}")
    active = listed.active
    comparable = infos[version].model == infos[active].model
    recalls: list[float] = []
    overlaps: list[float] = []
    timings: dict[int, list[float]] = {version: [], active: []}

    def timed(asked: int, query: np.ndarray, **options: Any) -> set[str]:
        started = time.perf_counter()
        [result] = client.search(collection, query, k, version=asked, **options)
        if not options:
            timings[asked].append(time.perf_counter() - started)
        return {hit.id for hit in result.hits}

    for query in np.asarray(queries, dtype=np.float32):
        found = timed(version, query)
        exact = timed(version, query, exact=True)
        recalls.append(len(found & exact) / max(len(exact), 1))
        if comparable and version != active:
            overlaps.append(len(found & timed(active, query)) / max(len(found), 1))
    return Verification(
        collection, version, active, k, len(queries), round(float(np.mean(recalls)), 4) if recalls else 0.0,
        round(float(np.mean(overlaps)), 4) if overlaps else None,
        _ms(timings[version], 50), _ms(timings[version], 99), _ms(timings[active], 50), _ms(timings[active], 99),
    )


def as_figures(result: Verification) -> Any:
    """`result` as the VerificationFigures message the router records for `quiver versions`."""
    from quiver.v1 import router_pb2

    return router_pb2.VerificationFigures(
        version=result.version, active=result.active, k=result.k, queries=result.queries, recall=result.recall,
        overlap=result.overlap or 0.0, has_overlap=result.overlap is not None, p50_ms=result.p50_ms, p99_ms=result.p99_ms,
        active_p50_ms=result.active_p50_ms, active_p99_ms=result.active_p99_ms, verified_unix=time.time(),
    )


def check_thresholds(result: Verification, min_recall: float | None, min_overlap: float | None) -> list[str]:
    """What falls short of the thresholds (empty: the version passes)."""
    short = []
    if min_recall is not None and result.recall < min_recall:
        short.append(f"recall@{result.k} {result.recall:.4f} < {min_recall}")
    if min_overlap is not None:
        if result.overlap is None:
            short.append("overlap cannot be measured between versions of different embedding models")
        elif result.overlap < min_overlap:
            short.append(f"overlap@{result.k} with v{result.active} {result.overlap:.4f} < {min_overlap}")
    return short


def load_queries(path: Path, limit: int) -> np.ndarray:
    """A query file (.npy, .fvecs, or .parquet with a 'vector' column); at most `limit` rows."""
    from quiver.vector_files import read_vectors

    return np.ascontiguousarray(read_vectors(path)[:limit], dtype=np.float32)
