"""Filter, Value and Metadata conversion between quiver.v1 protobuf messages and the domain types.

Only this package (and the servicers) touch `*_pb2`; the router and shard work on `quiver.filters`
values. Conversion from the wire is also where requests are validated: anything a person could get
wrong raises `InvalidArgument` naming where it is (`filter.and[1].range`) and what to change, so the
field index and the router never see an empty field name, an unbounded range or a NaN.

`metadata_from_proto` runs once per written point, so it inlines the common cases instead of going
through `value_from_proto`.
"""
from __future__ import annotations

import math

from quiver.errors import InvalidArgument
from quiver.filters import And, Contains, Eq, Exists, Filter, In, Metadata, MetaValue, Not, Or, Range, Scalar
from quiver.v1 import types_pb2

MAX_FILTER_DEPTH = 32
MAX_FIELD_NAME_BYTES = 128
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# A name of at most this many characters is within MAX_FIELD_NAME_BYTES whatever it holds (UTF-8 uses
# at most 4 bytes a character), so only longer names pay for encoding.
_SURELY_SHORT = MAX_FIELD_NAME_BYTES // 4
_SCALAR_KINDS = ("string_value", "int_value", "float_value", "bool_value")


def _field_name_problem(name: str) -> str | None:
    if not name:
        return "field name is empty"
    if len(name) > _SURELY_SHORT and len(name.encode()) > MAX_FIELD_NAME_BYTES:
        return f"field name longer than {MAX_FIELD_NAME_BYTES} bytes ({name[:32]!r}...)"
    return None


def _check_field(name: str, where: str) -> None:
    problem = _field_name_problem(name)
    if problem is not None:
        raise InvalidArgument(f"{where}: {problem}")


def check_field_name(name: str, where: str) -> None:
    """InvalidArgument unless `name` can be a metadata field name."""
    _check_field(name, where)


# Values and metadata.


def value_from_proto(msg: types_pb2.Value, where: str = "value") -> MetaValue:
    """The domain value of a `Value`; `where` prefixes error messages (e.g. "metadata field 'x'")."""
    kind = msg.WhichOneof("kind")
    if kind == "string_list":
        return tuple(msg.string_list.values)
    if kind is None:
        raise InvalidArgument(f"{where}: value is not set")
    value = getattr(msg, kind)
    if kind == "float_value" and not math.isfinite(value):
        raise InvalidArgument(f"{where}: float value is NaN or infinite")
    return value  # type: ignore[no-any-return]


def value_to_proto(value: MetaValue) -> types_pb2.Value:
    msg = types_pb2.Value()
    _fill_value(msg, value, "value")
    return msg


def _fill_value(msg: types_pb2.Value, value: MetaValue, where: str) -> None:
    # bool before int: bool is an int subclass, and True must travel as a bool.
    if isinstance(value, bool):
        msg.bool_value = value
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidArgument(f"{where}: int value {value} does not fit in 64 bits")
        msg.int_value = value
    elif isinstance(value, float):
        msg.float_value = value
    elif isinstance(value, str):
        msg.string_value = value
    elif isinstance(value, (tuple, list)) and all(isinstance(item, str) for item in value):
        msg.string_list.SetInParent()  # an empty list is still a list, not an unset value
        msg.string_list.values.extend(value)
    else:
        raise InvalidArgument(f"{where}: unsupported value {value!r} (want str, int, float, bool or a list of str)")


def metadata_from_proto(msg: types_pb2.Metadata, where: str = "metadata") -> Metadata:
    """Validated domain metadata of a point; string lists become tuples."""
    out: Metadata = {}
    for name, value in msg.fields.items():
        if not name or len(name) > _SURELY_SHORT:
            _check_field(name, where)
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            out[name] = value.string_value
        elif kind == "int_value":
            out[name] = value.int_value
        elif kind == "float_value":
            number = value.float_value
            if not math.isfinite(number):
                raise InvalidArgument(f"{where} field {name!r}: float value is NaN or infinite")
            out[name] = number
        elif kind == "bool_value":
            out[name] = value.bool_value
        elif kind == "string_list":
            out[name] = tuple(value.string_list.values)
        else:
            raise InvalidArgument(f"{where} field {name!r}: value is not set")
    return out


def metadata_to_proto(metadata: Metadata) -> types_pb2.Metadata:
    msg = types_pb2.Metadata()
    fields = msg.fields
    for name, value in metadata.items():
        _fill_value(fields[name], value, f"metadata field {name!r}")
    return msg


# Filters.


def filter_from_proto(msg: types_pb2.Filter, where: str = "filter") -> Filter | None:
    """The validated domain filter, or None when no kind is set (the request has no filter)."""
    if msg.WhichOneof("kind") is None:
        return None
    return _filter(msg, where, 1)


def _filter(msg: types_pb2.Filter, where: str, depth: int) -> Filter:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidArgument(f"filter nesting deeper than {MAX_FILTER_DEPTH}")
    kind = msg.WhichOneof("kind")
    if kind == "eq":
        _check_field(msg.eq.field, f"{where}.eq")
        value = _scalar(msg.eq.value, f"{where}: eq on {msg.eq.field!r}")
        return Eq(msg.eq.field, value)
    if kind == "in":
        node = getattr(msg, "in")
        _check_field(node.field, f"{where}.in")
        if not node.values:
            raise InvalidArgument(f"{where}: in on {node.field!r} has no values")
        values = tuple(_scalar(v, f"{where}: in on {node.field!r}, values[{i}]") for i, v in enumerate(node.values))
        return In(node.field, values)
    if kind == "range":
        return _range(msg.range, where)
    if kind == "exists":
        _check_field(msg.exists.field, f"{where}.exists")
        return Exists(msg.exists.field)
    if kind == "contains":
        _check_field(msg.contains.field, f"{where}.contains")
        return Contains(msg.contains.field, msg.contains.value)
    if kind == "and" or kind == "or":
        clauses = getattr(msg, kind).filters
        children = tuple(_filter(c, f"{where}.{kind}[{i}]", depth + 1) for i, c in enumerate(clauses))
        return And(children) if kind == "and" else Or(children)
    if kind == "not":
        return Not(_filter(getattr(msg, "not"), f"{where}.not", depth + 1))
    raise InvalidArgument(f"{where}: filter has no kind set (only a request's top-level filter may be empty)")


def _scalar(msg: types_pb2.Value, where: str) -> Scalar:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where}: value is not set")
    if kind == "string_list":
        raise InvalidArgument(f"{where}: value must be a string, int, float or bool, not a string list (use contains)")
    value = getattr(msg, kind)
    if kind == "float_value" and not math.isfinite(value):
        raise InvalidArgument(f"{where}: float value is NaN or infinite")
    return value  # type: ignore[no-any-return]


def _range(node: types_pb2.FieldRange, where: str) -> Range:
    _check_field(node.field, f"{where}.range")
    bounds: dict[str, float | None] = {}
    for name in ("gt", "gte", "lt", "lte"):
        if node.HasField(name):
            bound = getattr(node, name)
            if math.isnan(bound):
                raise InvalidArgument(f"{where}: range on {node.field!r}: bound {name} is NaN")
            bounds[name] = bound
    if not bounds:
        raise InvalidArgument(f"{where}: range on {node.field!r} has no bound (set gt, gte, lt or lte)")
    return Range(node.field, **bounds)  # type: ignore[arg-type]


def filter_to_proto(flt: Filter) -> types_pb2.Filter:
    msg = types_pb2.Filter()
    _fill_filter(msg, flt, "filter")
    return msg


def _fill_filter(msg: types_pb2.Filter, flt: Filter, where: str) -> None:
    # SetInParent marks the oneof even when the node is all defaults (an empty and, an exists on "").
    if isinstance(flt, Eq):
        msg.eq.field = flt.field
        _fill_scalar(msg.eq.value, flt.value, f"{where}.eq")
    elif isinstance(flt, In):
        node = getattr(msg, "in")
        node.SetInParent()
        node.field = flt.field
        for i, value in enumerate(flt.values):
            _fill_scalar(node.values.add(), value, f"{where}.in.values[{i}]")
    elif isinstance(flt, Range):
        msg.range.SetInParent()
        msg.range.field = flt.field
        for name in ("gt", "gte", "lt", "lte"):
            bound = getattr(flt, name)
            if bound is not None:
                setattr(msg.range, name, bound)
    elif isinstance(flt, Exists):
        msg.exists.SetInParent()
        msg.exists.field = flt.field
    elif isinstance(flt, Contains):
        msg.contains.SetInParent()
        msg.contains.field = flt.field
        msg.contains.value = flt.value
    elif isinstance(flt, (And, Or)):
        kind = "and" if isinstance(flt, And) else "or"
        node = getattr(msg, kind)
        node.SetInParent()
        for i, clause in enumerate(flt.clauses):
            _fill_filter(node.filters.add(), clause, f"{where}.{kind}[{i}]")
    elif isinstance(flt, Not):
        inner = getattr(msg, "not")
        inner.SetInParent()
        _fill_filter(inner, flt.clause, f"{where}.not")
    else:
        raise InvalidArgument(f"{where}: not a filter: {flt!r}")


def _fill_scalar(msg: types_pb2.Value, value: Scalar, where: str) -> None:
    if isinstance(value, (tuple, list)):
        raise InvalidArgument(f"{where}: value must be a string, int, float or bool, not a list (use Contains)")
    _fill_value(msg, value, where)
