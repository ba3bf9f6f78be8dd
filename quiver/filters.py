"""The metadata filter model: a small immutable AST that the router validates and the shard evaluates.

It is the domain form of `quiver.v1.Filter`; `quiver.wire` converts between the two. Keeping it free of
protobuf lets the shard's field index and the property tests work on plain Python values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# A metadata value as stored on a point.
Scalar = Union[str, int, float, bool]
MetaValue = Union[Scalar, tuple[str, ...]]
Metadata = dict[str, MetaValue]


@dataclass(frozen=True)
class Eq:
    field: str
    value: Scalar


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    """Numeric range; bounds left as None are open. int and float values compare numerically."""

    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class Exists:
    field: str


@dataclass(frozen=True)
class Contains:
    """A string-list field holds `value`."""

    field: str
    value: str


@dataclass(frozen=True)
class And:
    clauses: tuple["Filter", ...]


@dataclass(frozen=True)
class Or:
    clauses: tuple["Filter", ...]


@dataclass(frozen=True)
class Not:
    clause: "Filter"


Filter = Union[Eq, In, Range, Exists, Contains, And, Or, Not]


def matches(flt: Filter, metadata: Metadata) -> bool:
    """Reference semantics of a filter on one point's metadata.

    This is the oracle the field index is tested against, and the definition of what each operator
    means. Equality is type-strict except that int and float compare numerically, and bool never
    equals a number (True is not 1 here, unlike in Python).
    """
    if isinstance(flt, Eq):
        return flt.field in metadata and _scalar_equal(metadata[flt.field], flt.value)
    if isinstance(flt, In):
        return flt.field in metadata and any(_scalar_equal(metadata[flt.field], v) for v in flt.values)
    if isinstance(flt, Range):
        value = metadata.get(flt.field)
        if not _is_number(value):
            return False
        assert isinstance(value, (int, float))
        return (
            (flt.gt is None or value > flt.gt)
            and (flt.gte is None or value >= flt.gte)
            and (flt.lt is None or value < flt.lt)
            and (flt.lte is None or value <= flt.lte)
        )
    if isinstance(flt, Exists):
        return flt.field in metadata
    if isinstance(flt, Contains):
        value = metadata.get(flt.field)
        return isinstance(value, tuple) and flt.value in value
    if isinstance(flt, And):
        return all(matches(c, metadata) for c in flt.clauses)
    if isinstance(flt, Or):
        return any(matches(c, metadata) for c in flt.clauses)
    if isinstance(flt, Not):
        return not matches(flt.clause, metadata)
    raise TypeError(f"not a filter: {flt!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_equal(stored: MetaValue, wanted: Scalar) -> bool:
    if isinstance(stored, tuple):
        return False
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if _is_number(stored) and _is_number(wanted):
        return stored == wanted
    return type(stored) is type(wanted) and stored == wanted


def fields_of(flt: Filter) -> set[str]:
    """Every field name a filter mentions."""
    if isinstance(flt, (And, Or)):
        out: set[str] = set()
        for c in flt.clauses:
            out |= fields_of(c)
        return out
    if isinstance(flt, Not):
        return fields_of(flt.clause)
    return {flt.field}
