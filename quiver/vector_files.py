"""Reading vector files people already have: .npy, the TEXMEX *vecs formats, and Parquet (with pyarrow).

Shared by the CLI's `load` and `search` and the load tester; Parquet needs the `parquet` extra (pyarrow),
which the base install leaves out.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading .parquet needs pyarrow: pip install 'quiver[parquet]' (or use .npy / .fvecs)") from None
    return pq


def generated_ids(n: int) -> list[str]:
    """Ids for rows of a file that names none: unique across loads (a random prefix), ordered by row."""
    prefix = uuid.uuid4().hex[:12]
    return [f"{prefix}-{row}" for row in range(n)]


def read_ids_and_metadata(path: Path, n: int, ids_column: str | None) -> tuple[list[str], list[dict[str, Any]] | None, bool]:
    """(ids, metadata, whether the ids came from the file): generated ids unless `ids_column` names them."""
    if path.suffix != ".parquet":
        if ids_column:
            raise ValueError(f"--ids-column needs a .parquet file; {path.name} has only vectors")
        return generated_ids(n), None, False
    pq = _parquet()

    table = pq.read_table(path)
    if ids_column and ids_column not in table.column_names:
        raise ValueError(f"{path.name} has no column {ids_column!r} (its columns: {', '.join(table.column_names)})")
    columns = [c for c in table.column_names if c not in ("vector", ids_column)]
    ids = [str(v) for v in table.column(ids_column).to_pylist()] if ids_column else generated_ids(n)
    metadata = table.select(columns).to_pylist() if columns else None
    if metadata:
        metadata = [{k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items() if v is not None} for row in metadata]
    return ids, metadata, bool(ids_column)


def read_vectors(path: Path) -> np.ndarray:
    if path.suffix == ".parquet":
        pq = _parquet()

        column = pq.read_table(path, columns=["vector"]).column("vector").to_pylist()
        return np.asarray(column, dtype=np.float32)
    return load_vectors_file(path)


def load_vectors_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a vector file into RAM: .npy, .fvecs, .bvecs (as float32) or .ivecs (as int64).

    The *vecs formats are the TEXMEX ones (SIFT, GIST): per row an int32 dimension, then the
    values. They are memory-mapped and copied once, so peak RAM is the result's size.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        if array.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array, got shape {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float32)
    if suffix in (".fvecs", ".ivecs"):
        rows = _vecs_rows(path, np.dtype("<i4"), 1)
        values = np.ascontiguousarray(rows[:, 1:])
        if suffix == ".fvecs":
            return values.view(np.float32)
        return values.astype(np.int64)
    if suffix == ".bvecs":
        rows = _vecs_rows(path, np.dtype(np.uint8), 4)
        return rows[:, 4:].astype(np.float32)
    raise ValueError(f"{path}: unsupported vector file type {suffix!r} (.npy, .fvecs, .bvecs, .ivecs)")


def _vecs_rows(path: Path, dtype: np.dtype, header_items: int) -> np.ndarray:
    raw = np.memmap(path, dtype=dtype, mode="r")
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    dim = int(np.frombuffer(raw[:header_items].tobytes(), dtype="<i4")[0])
    row_items = header_items + dim
    if dim < 1 or raw.size % row_items:
        raise ValueError(f"{path}: size {raw.size} is not a whole number of {dim}-d rows")
    rows = raw.reshape(-1, row_items)
    dims = np.ascontiguousarray(rows[:, :header_items]).view("<i4").ravel()
    if not np.all(dims == dim):
        raise ValueError(f"{path}: rows of differing dimension")
    return rows
