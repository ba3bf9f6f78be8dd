"""Per-field metadata indexes for one shard partition: a filter becomes a bitmap over labels.

What: `FieldIndex` keeps, for every metadata field, typed numpy columns indexed by the point's internal
label (the dense int the vector index uses; labels are reused after deletes) and answers a
`quiver.filters.Filter` with a bool array over labels, which the ANN search takes as its allowed set.

Why this shape: a filter runs once per query over up to millions of points. A Python loop over points,
or a Python callback inside hnswlib, costs around a microsecond per point; a vectorised compare over a
column costs around a nanosecond. Columns indexed by label need no id translation, and because labels
are reused their length stays near the peak live count.

Layout per field (`_Column`):
- `kind` int8: the type the label holds for this field: absent, str, int, float, false, true or string
  list. A field may hold different types on different points; `kind` keeps the type-strict equality of
  `matches()` exact (a bool never equals a number, a string never equals a number). Exists is
  `kind != absent`; bool equality is a compare on `kind` alone, so bools need no column of their own.
- `codes` int32, made when the field first holds a string: a dictionary code per label, -1 where the
  label holds no string, so string equality is one compare. Codes are reference-counted and reused, so a
  high-cardinality field under churn does not grow its dictionary without bound.
- `ints` int64, made with the first int: exact values. A float64 column would round ints beyond 2**53
  and get equality and range wrong there; range bounds become exact integer thresholds via floor/ceil.
- `floats` float64, made with the first float: NaN wherever the label holds no float, so float compares
  need no kind mask (NaN compares false).
- `postings` str -> set of labels, for string-list fields: `contains` is one lookup, turned into a
  bitmap with `np.fromiter`; that label array is cached per item until the item's postings change, since
  iterating a large set costs far more than the bitmap itself.
Columns grow by an eighth (shard.columns) up to the highest label that has the field; a field whose last value is removed
is dropped. eq/in are compares on codes/ints/floats/kind (for several strings, a lookup table indexed by
code; for several numbers, `np.isin`), range compares the numeric columns, and/or/not are bitwise ops;
`not` is the complement within the caller's `live`.

Semantics are exactly those of `quiver.filters.matches()` (the property tests check this), including
int/float equality and ordering beyond 2**53, which Python compares exactly.

No per-point Python objects: `get()` (metadata returned with results) rebuilds a point's dict from the
columns, in the key order it was set, from a 4-byte schema id per label (an index into the distinct
tuples of field names seen). String lists are the exception: each is kept as a tuple beside its postings,
since order and repeats matter to `get()`. Snapshots (`to_bytes`) hold the columns and schemas, so loading
is near free; a version-1 snapshot (from when every point had a dict) derives the schemas from the columns,
its keys then coming back in column order.
"""
from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import math
import operator
import sys
from typing import Any, Callable, Iterator

import numpy as np

from quiver.filters import And, Contains, Eq, Exists, Filter, In, Metadata, MetaValue, Not, Or, Range
from shard.columns import grow, grown_capacity

_ABSENT, _STR, _INT, _FLOAT, _FALSE, _TRUE, _LIST = range(7)
_N_KINDS = 7
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MIN_CAPACITY = 64
_SNAPSHOT_VERSION = 2

# Rough CPython costs behind memory_bytes(); the columns are measured, the Python objects estimated.
_LIST_BYTES = 120  # a string-list value kept as a tuple in its column's dict, beyond the strings
_KEY_BYTES = 100  # one string-dictionary or postings key, beyond the string itself
_POSTING_BYTES = 40  # one label in a postings set, amortised over the set's hash table

_NUMPY_OPS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _kind_of(value: object) -> int:
    """The column kind of one metadata value; raises for values Metadata cannot hold."""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"int metadata value {value} does not fit in 64 bits")
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, (tuple, list)):
        if all(isinstance(item, str) for item in value):
            return _LIST
        raise TypeError("a list metadata value must hold only strings")
    raise TypeError(f"unsupported metadata value type {type(value).__name__}")


def _grow(array: np.ndarray, needed: int, fill: object) -> np.ndarray:
    return grow(array, needed, fill, _MIN_CAPACITY)


def _schema_dtype(schemas: int) -> np.dtype:
    """The narrowest unsigned column that numbers `schemas` schemas."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if schemas - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise OverflowError(f"{schemas} distinct sets of metadata field names")


def _fit(mask: np.ndarray, n: int) -> np.ndarray:
    """Pads a mask computed over a column shorter than the caller's label space with False."""
    if len(mask) == n:
        return mask
    out = np.zeros(n, dtype=bool)
    out[: len(mask)] = mask
    return out


def _or(acc: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    if acc is None:
        return part
    acc |= part
    return acc


def _int_bound(op: str, bound: float) -> tuple[str, int] | bool:
    """Rewrites `i <op> bound` for int64 `i` as an exact int64 compare, or a constant (all / none).

    Converting the ints to float instead would round values beyond 2**53 and disagree with Python.
    """
    if isinstance(bound, float):
        if math.isnan(bound):
            return False
        if math.isinf(bound):
            return (bound > 0) == (op in ("<", "<="))
        threshold = math.floor(bound) if op in (">", "<=") else math.ceil(bound)
    else:
        threshold = int(bound)
    if threshold > _INT64_MAX:
        return op in ("<", "<=")
    if threshold < _INT64_MIN:
        return op in (">", ">=")
    return op, threshold


_LOOSER = {">": ">=", ">=": ">=", "<": "<", "<=": "<"}
_STRICTER = {">": ">", ">=": ">", "<": "<=", "<=": "<="}


def _float_bound(op: str, bound: float) -> tuple[str, float]:
    """Rewrites `f <op> bound` for float64 `f` as an exact float compare.

    Bounds arrive as floats from the wire; an int bound a double cannot hold is replaced by its nearest
    double, adjusting strictness, since no double lies strictly between the two.
    """
    if isinstance(bound, float):
        return op, bound
    try:
        near = float(bound)
    except OverflowError:
        near = math.inf if bound > 0 else -math.inf
    if near == bound:
        return op, near
    return (_LOOSER[op] if near > bound else _STRICTER[op]), near


class _Column:
    """The typed columns of one field, indexed by label (see the module docstring)."""

    __slots__ = (
        "kind",
        "codes",
        "ints",
        "floats",
        "counts",
        "str_to_code",
        "code_strs",
        "code_refs",
        "free_codes",
        "dict_bytes",
        "postings",
        "posting_arrays",
        "posting_entries",
        "lists",
    )

    def __init__(self, capacity: int) -> None:
        self.kind = np.zeros(capacity, dtype=np.int8)
        self.codes: np.ndarray | None = None
        self.ints: np.ndarray | None = None
        self.floats: np.ndarray | None = None
        self.counts = [0] * _N_KINDS
        self.str_to_code: dict[str, int] = {}
        self.code_strs: list[str | None] = []
        self.code_refs: list[int] = []
        self.free_codes: list[int] = []
        self.dict_bytes = 0
        self.postings: dict[str, set[int]] = {}
        self.posting_arrays: dict[str, np.ndarray] = {}
        self.posting_entries = 0
        self.lists: dict[int, tuple[str, ...]] = {}  # label -> its string list as set (order and repeats kept)

    def size(self) -> int:
        return sum(self.counts) - self.counts[_ABSENT]

    def nbytes(self) -> int:
        columns = sum(a.nbytes for a in (self.kind, self.codes, self.ints, self.floats) if a is not None)
        postings = len(self.postings) * _KEY_BYTES + self.posting_entries * _POSTING_BYTES
        postings += sum(sys.getsizeof(value) for value in self.postings)
        postings += sum(array.nbytes for array in self.posting_arrays.values())
        return columns + self.dict_bytes + postings

    def _ensure(self, label: int) -> None:
        capacity = len(self.kind)
        if label < capacity:
            return
        capacity = grown_capacity(capacity, label + 1, _MIN_CAPACITY)
        self.kind = _grow(self.kind, capacity, _ABSENT)
        if self.codes is not None:
            self.codes = _grow(self.codes, capacity, -1)
        if self.ints is not None:
            self.ints = _grow(self.ints, capacity, 0)
        if self.floats is not None:
            self.floats = _grow(self.floats, capacity, np.nan)

    def put(self, label: int, kind: int, value: MetaValue) -> None:
        """Records `value` for a label that has no value in this field."""
        self._ensure(label)
        self.kind[label] = kind
        self.counts[kind] += 1
        if kind == _STR:
            if self.codes is None:
                self.codes = np.full(len(self.kind), -1, dtype=np.int32)
            self.codes[label] = self._acquire_code(value)  # type: ignore[arg-type]
        elif kind == _INT:
            if self.ints is None:
                self.ints = np.zeros(len(self.kind), dtype=np.int64)
            self.ints[label] = value
        elif kind == _FLOAT:
            if self.floats is None:
                self.floats = np.full(len(self.kind), np.nan, dtype=np.float64)
            self.floats[label] = value
        elif kind == _LIST:
            self.lists[label] = value  # type: ignore[assignment]
            for item in set(value):  # type: ignore[arg-type]
                self.postings.setdefault(item, set()).add(label)
                self.posting_arrays.pop(item, None)
                self.posting_entries += 1

    def value(self, label: int) -> MetaValue:
        """The value `put` recorded for a label that has one in this field."""
        kind = int(self.kind[label])
        if kind == _STR:
            return self.code_strs[int(self.codes[label])]  # type: ignore[index,return-value]
        if kind == _INT:
            return int(self.ints[label])  # type: ignore[index]
        if kind == _FLOAT:
            return float(self.floats[label])  # type: ignore[index]
        if kind == _LIST:
            return self.lists[label]
        return kind == _TRUE

    def clear(self, label: int) -> None:
        """Forgets the label's value in this field (one it has)."""
        kind = int(self.kind[label])
        value = self.lists.pop(label) if kind == _LIST else None
        self.kind[label] = _ABSENT
        self.counts[kind] -= 1
        if kind == _STR:
            assert self.codes is not None
            code = int(self.codes[label])
            self.codes[label] = -1
            self._release_code(code)
        elif kind == _FLOAT:
            assert self.floats is not None
            self.floats[label] = np.nan
        elif kind == _LIST:
            for item in set(value):  # type: ignore[arg-type]
                holders = self.postings[item]
                holders.discard(label)
                self.posting_arrays.pop(item, None)
                self.posting_entries -= 1
                if not holders:
                    del self.postings[item]

    def _acquire_code(self, text: str) -> int:
        code = self.str_to_code.get(text)
        if code is not None:
            self.code_refs[code] += 1
            return code
        if self.free_codes:
            code = self.free_codes.pop()
            self.code_strs[code] = text
            self.code_refs[code] = 1
        else:
            code = len(self.code_strs)
            self.code_strs.append(text)
            self.code_refs.append(1)
        self.str_to_code[text] = code
        self.dict_bytes += sys.getsizeof(text) + _KEY_BYTES
        return code

    def _release_code(self, code: int) -> None:
        self.code_refs[code] -= 1
        if self.code_refs[code]:
            return
        text = self.code_strs[code]
        assert text is not None
        del self.str_to_code[text]
        self.code_strs[code] = None
        self.free_codes.append(code)
        self.dict_bytes -= sys.getsizeof(text) + _KEY_BYTES

    def to_arrays(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The snapshot form: a JSON-able spec (string dictionaries) and the raw arrays."""
        arrays = {"kind": self.kind}
        for part in ("codes", "ints", "floats"):
            array = getattr(self, part)
            if array is not None:
                arrays[part] = array
        lists = [self.lists[label] for label in np.flatnonzero(self.kind == _LIST).tolist()]
        list_strings, arrays["list_lengths"], arrays["list_items"] = _pack_lists(lists)  # type: ignore[arg-type]
        return {"name": name, "strings": self.code_strs, "list_strings": list_strings}, arrays

    @classmethod
    def from_arrays(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> _Column:
        """A column from its snapshot parts."""
        column = cls(0)
        kind = column.kind = arrays["kind"]
        column.codes, column.ints, column.floats = arrays.get("codes"), arrays.get("ints"), arrays.get("floats")
        counts = np.bincount(kind.view(np.uint8), minlength=_N_KINDS).tolist()
        needed = ((_STR, column.codes), (_INT, column.ints), (_FLOAT, column.floats))
        if len(counts) != _N_KINDS or any(
            (counts[k] and array is None) or (array is not None and len(array) != len(kind)) for k, array in needed
        ):
            raise ValueError("field index snapshot is corrupt: bad kind column")
        column.counts = [0] + counts[1:]
        strings: list[str | None] = spec["strings"]
        column.code_strs = strings
        column.str_to_code = {text: code for code, text in enumerate(strings) if text is not None}
        column.free_codes = [code for code, text in enumerate(strings) if text is None]
        column.dict_bytes = sum(sys.getsizeof(text) + _KEY_BYTES for text in column.str_to_code)
        if column.codes is not None:
            column.code_refs = np.bincount(column.codes[column.codes >= 0], minlength=len(strings)).tolist()
        rows = np.flatnonzero(kind == _LIST)
        lengths, items = arrays["list_lengths"], arrays["list_items"]
        if len(rows) != len(lengths) or int(lengths.sum()) != len(items):
            raise ValueError("field index snapshot is corrupt: string lists do not match the kind column")
        column._build_postings(rows, lengths, items, spec["list_strings"])
        column.lists = dict(zip(rows.tolist(), _unpack_lists(spec["list_strings"], lengths, items)))
        return column

    def _build_postings(self, rows: np.ndarray, lengths: np.ndarray, items: np.ndarray, strings: list[str]) -> None:
        """Postings from packed lists: sort (item, label) pairs by item and cut into runs."""
        labels = np.repeat(rows, lengths)
        order = np.argsort(items, kind="stable")
        items, labels = items[order], labels[order]
        starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]]) if len(items) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(items)].astype(np.int64)
        for code, start, end in zip(items[starts].tolist(), starts.tolist(), ends.tolist()):
            holders = set(labels[start:end].tolist())  # a set drops an item repeated within one list
            self.postings[strings[code]] = holders
            self.posting_entries += len(holders)

    # Leaf evaluation. Each returns a fresh bool array of length min(n, capacity); the caller pads.

    def match_any(self, wanted: tuple[object, ...], n: int) -> np.ndarray:
        """Labels whose value equals any of `wanted` under matches()' equality (eq and in)."""
        m = min(n, len(self.kind))
        strs: list[str] = []
        int_targets: list[int] = []
        float_targets: list[float] = []
        kinds: list[int] = []
        for value in wanted:
            if isinstance(value, bool):
                kinds.append(_TRUE if value else _FALSE)
            elif isinstance(value, int):
                if _INT64_MIN <= value <= _INT64_MAX:
                    int_targets.append(value)
                try:
                    as_float = float(value)
                except OverflowError:
                    continue
                if as_float == value:  # an int no double holds equals no float
                    float_targets.append(as_float)
            elif isinstance(value, float):
                if not math.isnan(value):
                    float_targets.append(value)
                if value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
                    int_targets.append(int(value))
            elif isinstance(value, str):
                strs.append(value)
            # Any other type (a tuple, None) equals no stored value, as in matches().
        acc: np.ndarray | None = None
        if strs and self.codes is not None:
            codes = [self.str_to_code[s] for s in strs if s in self.str_to_code]
            if len(codes) == 1:
                acc = _or(acc, self.codes[:m] == codes[0])
            elif codes:
                # A lookup table over codes, one gather per label; its extra last slot stays False and is
                # what the -1 (no string) code indexes. np.isin sorts and took ~4x longer here.
                table = np.zeros(len(self.code_strs) + 1, dtype=bool)
                table[codes] = True
                acc = _or(acc, np.take(table, self.codes[:m]))
        if int_targets and self.counts[_INT]:
            assert self.ints is not None
            ints = self.ints[:m]
            hits = ints == int_targets[0] if len(int_targets) == 1 else np.isin(ints, int_targets)
            acc = _or(acc, hits & (self.kind[:m] == _INT))
        if float_targets and self.counts[_FLOAT]:
            assert self.floats is not None
            floats = self.floats[:m]
            acc = _or(acc, floats == float_targets[0] if len(float_targets) == 1 else np.isin(floats, float_targets))
        for kind in set(kinds):
            if self.counts[kind]:
                acc = _or(acc, self.kind[:m] == kind)
        return acc if acc is not None else np.zeros(m, dtype=bool)

    def match_range(self, bounds: list[tuple[str, float]], n: int) -> np.ndarray:
        m = min(n, len(self.kind))
        acc: np.ndarray | None = None
        if self.counts[_FLOAT]:
            assert self.floats is not None
            floats = self.floats[:m]
            hits = None if bounds else self.kind[:m] == _FLOAT
            for op, bound in bounds:
                float_op, value = _float_bound(op, bound)
                part = _NUMPY_OPS[float_op](floats, value)
                hits = part if hits is None else hits & part
            acc = _or(acc, hits)  # type: ignore[arg-type]
        if self.counts[_INT]:
            assert self.ints is not None
            ints = self.ints[:m]
            hits = self.kind[:m] == _INT
            for op, bound in bounds:
                rewritten = _int_bound(op, bound)
                if rewritten is False:
                    hits[:] = False
                    break
                if rewritten is not True:
                    int_op, threshold = rewritten  # type: ignore[misc]
                    hits &= _NUMPY_OPS[int_op](ints, threshold)
            acc = _or(acc, hits)
        return acc if acc is not None else np.zeros(m, dtype=bool)

    def match_exists(self, n: int) -> np.ndarray:
        return self.kind[:n] != _ABSENT

    def match_contains(self, item: object, n: int) -> np.ndarray:
        m = min(n, len(self.kind))
        out = np.zeros(m, dtype=bool)
        holders = self.postings.get(item) if isinstance(item, str) else None
        if holders:
            labels = self.posting_arrays.get(item)  # type: ignore[arg-type]
            if labels is None:
                labels = np.fromiter(holders, dtype=np.int64, count=len(holders))
                self.posting_arrays[item] = labels  # type: ignore[index]
            out[labels[labels < m] if m < len(self.kind) else labels] = True
        return out


class FieldIndex:
    """Metadata of one shard partition, indexed per field for vectorised filter evaluation.

    Not thread-safe: callers serialise set()/remove() against everything else. Concurrent evaluate()
    and get() calls are safe with each other (a reader-writer lock is enough).
    """

    def __init__(self) -> None:
        self._fields: dict[str, _Column] = {}
        # Which fields each label holds, as an index into _schemas (the distinct field-name tuples, in the
        # order the metadata gave them): 1 B a label while there are at most 256 schemas (then 2, then 4)
        # instead of a dict per point. Schema 0 is no fields.
        self._schema_of = np.zeros(0, dtype=_schema_dtype(1))
        self._schemas: list[tuple[str, ...]] = [()]
        self._schema_ids: dict[tuple[str, ...], int] = {(): 0}
        self._labels = 0  # labels holding at least one field

    def __len__(self) -> int:
        return self._labels

    def set(self, label: int, metadata: Metadata) -> None:
        """Stores `metadata` for `label`, replacing whatever it had. Lists are stored as tuples."""
        label = operator.index(label)  # a numpy int would otherwise end up in the postings sets
        if label < 0:
            raise ValueError(f"label must be non-negative, got {label}")
        stored: Metadata = {}
        kinds: list[int] = []
        for name, value in metadata.items():  # validate everything before changing anything
            if not isinstance(name, str):
                raise TypeError(f"metadata field names must be strings, got {type(name).__name__}")
            kind = _kind_of(value)
            stored[name] = tuple(value) if kind == _LIST else value  # type: ignore[arg-type]
            kinds.append(kind)
        self.remove(label)
        if not stored:
            return
        for (name, value), kind in zip(stored.items(), kinds):
            column = self._fields.get(name)
            if column is None:
                column = self._fields[name] = _Column(0)
            column.put(label, kind, value)
        if label >= len(self._schema_of):
            self._schema_of = _grow(self._schema_of, label + 1, 0)
        schema = self._schema_id(tuple(stored))  # first: a new schema may widen the column
        self._schema_of[label] = schema
        self._labels += 1

    def _schema_id(self, names: tuple[str, ...]) -> int:
        schema = self._schema_ids.get(names)
        if schema is None:
            schema = self._schema_ids[names] = len(self._schemas)
            self._schemas.append(names)
            wanted = _schema_dtype(len(self._schemas))
            if wanted != self._schema_of.dtype:
                self._schema_of = self._schema_of.astype(wanted)
        return schema

    def _names_of(self, label: int) -> tuple[str, ...]:
        return self._schemas[int(self._schema_of[label])] if 0 <= label < len(self._schema_of) else ()

    def remove(self, label: int) -> None:
        """Forgets the label's metadata; a label never set is a no-op."""
        names = self._names_of(label)
        if not names:
            return
        for name in names:
            column = self._fields[name]
            column.clear(label)
            if not column.size():
                del self._fields[name]  # frees the columns of a field nobody uses any more
        self._schema_of[label] = 0
        self._labels -= 1

    def get(self, label: int) -> Metadata:
        """The label's metadata as stored, rebuilt from the columns; empty for a label never set or removed."""
        return {name: self._fields[name].value(label) for name in self._names_of(label)}

    def evaluate(self, flt: Filter, live: np.ndarray) -> np.ndarray:
        """Bool array over `live`'s labels: True where the label is live and its metadata matches.

        `live` may be longer than any label this index has seen; such labels have empty metadata.
        """
        live = np.asarray(live, dtype=bool)
        if live.ndim != 1:
            raise ValueError("live must be a 1-d bool array indexed by label")
        result = self._eval(flt, len(live))
        result &= live
        return result

    def _eval(self, flt: Filter, n: int) -> np.ndarray:
        """A fresh length-n mask; bits of labels outside `live` are arbitrary (evaluate masks them)."""
        if isinstance(flt, And):
            acc = np.ones(n, dtype=bool)
            for clause in flt.clauses:
                acc &= self._eval(clause, n)
            return acc
        if isinstance(flt, Or):
            acc = np.zeros(n, dtype=bool)
            for clause in flt.clauses:
                acc |= self._eval(clause, n)
            return acc
        if isinstance(flt, Not):
            inner = self._eval(flt.clause, n)
            np.logical_not(inner, out=inner)
            return inner
        if not isinstance(flt, (Eq, In, Range, Exists, Contains)):
            raise TypeError(f"not a filter: {flt!r}")
        column = self._fields.get(flt.field)
        if column is None:
            return np.zeros(n, dtype=bool)
        if isinstance(flt, Eq):
            mask = column.match_any((flt.value,), n)
        elif isinstance(flt, In):
            mask = column.match_any(tuple(flt.values), n)
        elif isinstance(flt, Range):
            bounds = [
                (op, bound)
                for op, bound in ((">", flt.gt), (">=", flt.gte), ("<", flt.lt), ("<=", flt.lte))
                if bound is not None
            ]
            mask = column.match_range(bounds, n)
        elif isinstance(flt, Exists):
            mask = column.match_exists(n)
        else:
            mask = column.match_contains(flt.value, n)
        return _fit(mask, n)

    def memory_bytes(self) -> int:
        """Approximate bytes held: columns measured, dictionaries and Python objects estimated."""
        columns = sum(column.nbytes() for column in self._fields.values())
        lists = sum(len(column.lists) for column in self._fields.values()) * _LIST_BYTES
        return columns + self._schema_of.nbytes + len(self._schemas) * _KEY_BYTES + lists

    def to_bytes(self) -> bytes:
        """Snapshot: the columns themselves, plus the strings they refer to.

        An uncompressed .npz: a JSON header (field names and string dictionaries) and the raw
        kind/codes/ints/floats arrays, string lists packed as lengths + item codes. The kind column keeps
        int, float and bool apart, so every value round-trips exactly (NaN, -0.0, 64-bit ints included).
        """
        arrays: dict[str, np.ndarray] = {"schema_of": self._schema_of}
        specs = []
        for i, (name, column) in enumerate(self._fields.items()):
            spec, parts = column.to_arrays(name)
            specs.append(spec)
            arrays.update({f"{i}.{part}": array for part, array in parts.items()})
        header = {"version": _SNAPSHOT_VERSION, "fields": specs, "schemas": [list(names) for names in self._schemas]}
        arrays["header"] = np.frombuffer(json.dumps(header, ensure_ascii=False).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FieldIndex:
        """Rebuilds an index from `to_bytes()` output (this version's, or version 1's)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        header = json.loads(arrays.pop("header").tobytes())
        if header.get("version") not in (1, _SNAPSHOT_VERSION):
            raise ValueError(f"unsupported field index snapshot version {header.get('version')!r}")
        index = cls()
        with _gc_paused():
            for i, spec in enumerate(header["fields"]):
                prefix = f"{i}."
                parts = {key[len(prefix) :]: array for key, array in arrays.items() if key.startswith(prefix)}
                index._fields[spec["name"]] = _Column.from_arrays(spec, parts)
            if header["version"] == 1:
                index._schemas_from_columns(arrays["labels"])
            else:
                index._schemas = [tuple(names) for names in header["schemas"]]
                index._schema_ids = {names: n for n, names in enumerate(index._schemas)}
                index._schema_of = arrays["schema_of"].astype(_schema_dtype(len(index._schemas)), copy=False)
                if len(index._schemas) == 0 or index._schemas[0] != () or (
                    len(index._schema_of) and int(index._schema_of.max()) >= len(index._schemas)
                ):
                    raise ValueError("field index snapshot is corrupt: bad schema column")
                index._labels = int(np.count_nonzero(index._schema_of))
        index._check_schemas()
        return index

    def _schemas_from_columns(self, labels: np.ndarray) -> None:
        """Version 1 kept no schemas (its points' dicts were rebuilt): derive each label's field names
        from the columns that hold a value for it, in column order."""
        size = int(labels.max()) + 1 if len(labels) else 0
        self._schema_of = np.zeros(max(size, _MIN_CAPACITY), dtype=np.int32)  # narrowed once the schemas are known
        names = list(self._fields)
        held = np.zeros((len(names), len(self._schema_of)), dtype=bool)
        for row, column in enumerate(self._fields.values()):
            part = column.kind[: len(self._schema_of)] != _ABSENT
            held[row, : len(part)] = part
        patterns, inverse = np.unique(held.T, axis=0, return_inverse=True) if names else (np.zeros((1, 0), bool), np.zeros(len(self._schema_of), np.int64))
        ids = [self._schema_id(tuple(n for n, h in zip(names, pattern.tolist()) if h)) for pattern in patterns]
        self._schema_of = np.asarray(ids, dtype=np.int32)[inverse.reshape(-1)].astype(_schema_dtype(len(self._schemas)))
        self._labels = int(np.count_nonzero(self._schema_of))

    def _check_schemas(self) -> None:
        """Every field a label's schema names holds a value for it, and no column holds values for labels
        outside a schema naming it: a snapshot that disagrees is corrupt."""
        for name, column in self._fields.items():
            named = np.array([name in names for names in self._schemas], dtype=bool)
            expected = named[self._schema_of]
            held = column.kind != _ABSENT
            n = max(len(expected), len(held))
            if not np.array_equal(_fit(expected, n), _fit(held, n)):
                raise ValueError("field index snapshot is corrupt: a column has an unknown label")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses CPython's cyclic GC while a snapshot is converted.

    A load creates millions of dicts and tuples, none of them cyclic; each time allocations cross the GC
    threshold the collector rescans them all, which more than doubled the load time of 1M points.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _pack_lists(lists: list[tuple[str, ...]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Flattens string lists into (distinct strings, per-list lengths, item codes)."""
    dictionary: dict[str, int] = {}
    items = [dictionary.setdefault(item, len(dictionary)) for item in itertools.chain.from_iterable(lists)]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return list(dictionary), lengths, np.array(items, dtype=np.int32)


def _unpack_lists(strings: list[str], lengths: np.ndarray, items: np.ndarray) -> list[tuple[str, ...]]:
    flat = np.array(strings, dtype=object)[items].tolist() if len(items) else []
    ends = np.cumsum(lengths).tolist()
    return [tuple(flat[start:end]) for start, end in zip([0] + ends[:-1], ends)]
