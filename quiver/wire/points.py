"""Wire conversions for vectors, points and search results (packed little-endian float32 bytes)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quiver.errors import InvalidArgument
from quiver.filters import Metadata
from quiver.v1 import types_pb2
from quiver.wire.filters import metadata_from_proto, metadata_to_proto

_F32 = np.dtype("<f4")


def vectors_from_bytes(data: bytes, dim: int, expected_rows: int | None, what: str) -> np.ndarray:
    """n x dim float32 view of packed bytes; refuses a length that is not a whole number of rows."""
    row_bytes = 4 * dim
    if len(data) % row_bytes:
        raise InvalidArgument(f"{what}: {_dimension_mismatch(len(data), dim, expected_rows)}")
    rows = len(data) // row_bytes
    if expected_rows is not None and rows != expected_rows:
        raise InvalidArgument(f"{what}: got {rows} vectors of dimension {dim} for {expected_rows} ids")
    return np.frombuffer(data, dtype=_F32).reshape(rows, dim)


def _dimension_mismatch(n_bytes: int, dim: int, expected_rows: int | None) -> str:
    """Why packed float32 bytes are not rows of `dim`, in dimensions where the bytes allow it."""
    if n_bytes % 4:
        return f"{n_bytes} bytes is not a whole number of float32 values (4 bytes each); pack vectors as little-endian float32"
    values = n_bytes // 4
    if expected_rows and values % expected_rows == 0:
        return (f"got {expected_rows} vector(s) of dimension {values // expected_rows}, but the collection's dimension "
                f"is {dim}; embed with the collection's model, or use a collection of that dimension")
    return (f"got {values} float32 values, not a whole number of vectors of the collection's dimension {dim} "
            f"(a single vector of dimension {values}?)")


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype=_F32).tobytes()


def metadata_list_from_proto(items: Sequence[types_pb2.Metadata], expected: int) -> list[Metadata] | None:
    if not items:
        return None
    if len(items) != expected:
        raise InvalidArgument(f"metadata: got {len(items)} entries for {expected} ids; send none or one per id")
    return [metadata_from_proto(item) for item in items]


STRATEGIES = {
    "ann": types_pb2.ANN,
    "ann_filtered": types_pb2.ANN_FILTERED,
    "exact": types_pb2.EXACT,
    "exact_filtered": types_pb2.EXACT_FILTERED,
    "ann_post_filtered": types_pb2.ANN_POST_FILTERED,
}


def query_result_to_proto(
    ids: list[str], scores: np.ndarray, metadata: list[Metadata] | None, vectors: np.ndarray | None, strategy: str,
    estimated_cost_us: float = 0.0, filter_matches: int = 0,
) -> types_pb2.QueryResult:
    result = types_pb2.QueryResult(
        ids=ids, scores=scores.tolist(), strategy=STRATEGIES[strategy], estimated_cost_us=estimated_cost_us, filter_matches=filter_matches,
    )
    if metadata is not None:
        result.metadata.extend(metadata_to_proto(m) for m in metadata)
    if vectors is not None:
        result.vectors = vectors_to_bytes(vectors)
    return result


def point_to_proto(point_id: str, metadata: Metadata, vector: np.ndarray | None) -> types_pb2.Point:
    point = types_pb2.Point(id=point_id, metadata=metadata_to_proto(metadata))
    if vector is not None:
        point.vector = vectors_to_bytes(vector)
    return point
