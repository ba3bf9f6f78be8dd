"""quiver.wire.filters: every filter and value kind survives the wire, and bad input gets a usable message."""
from __future__ import annotations

import math
from typing import Callable

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.errors import InvalidArgument, grpc_status_for
from quiver.filters import And, Contains, Eq, Exists, Filter, In, Metadata, Not, Or, Range
from quiver.v1 import types_pb2
from quiver.wire.filters import (
    MAX_FILTER_DEPTH,
    filter_from_proto,
    filter_to_proto,
    metadata_from_proto,
    metadata_to_proto,
    value_from_proto,
    value_to_proto,
)


def _over_the_wire(flt: Filter) -> Filter | None:
    data = filter_to_proto(flt).SerializeToString()
    return filter_from_proto(types_pb2.Filter.FromString(data))


@pytest.mark.parametrize(
    "flt",
    [
        Eq("color", "red"),
        Eq("n", 7),
        Eq("n", -(2**63)),
        Eq("price", 2.5),
        Eq("flag", True),
        Eq("flag", False),
        Eq("empty", ""),
        In("tag", ("a", 1, 2.5, False)),
        Range("price", gt=1.0),
        Range("price", gte=1.0, lt=2.0),
        Range("price", lte=-0.5),
        Range("price", gt=-math.inf, lt=math.inf),
        Exists("color"),
        Contains("tags", "x"),
        Contains("tags", ""),
        And(()),
        Or(()),
        Not(Exists("color")),
        And((Eq("a", 1), Or((Contains("t", "x"), Not(Range("p", gte=0.0)))), In("b", ("x",)))),
    ],
    ids=repr,
)
def test_every_filter_kind_round_trips_through_serialised_proto(flt: Filter) -> None:
    assert _over_the_wire(flt) == flt


def test_int_and_float_values_keep_their_type_across_the_wire() -> None:
    back = _over_the_wire(In("n", (1, 1.0, True)))
    assert isinstance(back, In)
    assert [type(v) for v in back.values] == [int, float, bool]


def test_a_filter_with_no_kind_set_means_no_filter() -> None:
    assert filter_from_proto(types_pb2.Filter()) is None


scalars = st.one_of(
    st.text(max_size=5),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
fields = st.text(min_size=1, max_size=10)
bound = st.one_of(st.none(), st.floats(allow_nan=False))
leaves = st.one_of(
    st.builds(Eq, fields, scalars),
    st.builds(In, fields, st.lists(scalars, min_size=1, max_size=3).map(tuple)),
    st.builds(Range, fields, bound, bound, bound, bound).filter(
        lambda r: any(b is not None for b in (r.gt, r.gte, r.lt, r.lte))
    ),
    st.builds(Exists, fields),
    st.builds(Contains, fields, st.text(max_size=5)),
)
filters = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: And(tuple(c))),
        st.lists(children, max_size=3).map(lambda c: Or(tuple(c))),
        children.map(Not),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(filters)
def test_random_filters_round_trip_unchanged(flt: Filter) -> None:
    assert _over_the_wire(flt) == flt


def test_metadata_of_every_value_kind_round_trips_exactly() -> None:
    metadata: Metadata = {
        "s": "é",
        "empty": "",
        "i": 2**63 - 1,
        "neg": -(2**63),
        "f": -0.0,
        "whole": 3.0,
        "b": True,
        "tags": ("a", "b", "a"),
        "none": (),
    }
    data = metadata_to_proto(metadata).SerializeToString()
    back = metadata_from_proto(types_pb2.Metadata.FromString(data))
    assert back == metadata
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in metadata.items()}
    assert math.copysign(1.0, back["f"]) == -1.0  # type: ignore[arg-type]


def test_value_conversion_accepts_lists_and_returns_tuples() -> None:
    assert value_from_proto(value_to_proto(["a", "b"])) == ("a", "b")  # type: ignore[arg-type]
    assert value_to_proto(()).WhichOneof("kind") == "string_list"
    assert value_to_proto(True).WhichOneof("kind") == "bool_value"


def _value(**kwargs: object) -> types_pb2.Value:
    return types_pb2.Value(**kwargs)  # type: ignore[arg-type]


def _range(**kwargs: object) -> types_pb2.Filter:
    return types_pb2.Filter(range=types_pb2.FieldRange(**kwargs))  # type: ignore[arg-type]


def _and(*filters: types_pb2.Filter) -> types_pb2.Filter:
    return types_pb2.Filter(**{"and": types_pb2.FilterList(filters=filters)})


def _in(field: str, *values: types_pb2.Value) -> types_pb2.Filter:
    return types_pb2.Filter(**{"in": types_pb2.FieldIn(field=field, values=values)})


def _nested_not(depth: int) -> types_pb2.Filter:
    msg = types_pb2.Filter(exists=types_pb2.FieldExists(field="x"))
    for _ in range(depth - 1):
        msg = types_pb2.Filter(**{"not": msg})
    return msg


def _empty_not() -> types_pb2.Filter:
    msg = types_pb2.Filter()
    getattr(msg, "not").SetInParent()
    return msg


INVALID_FILTERS: list[tuple[str, Callable[[], types_pb2.Filter], str]] = [
    ("empty field in a nested range", lambda: _and(_range(field="p", gt=1), _range(gt=1)),
     "filter.and[1].range: field name is empty"),
    ("range without bounds", lambda: _range(field="price"), "filter: range on 'price' has no bound"),
    ("range with a NaN bound", lambda: _range(field="price", gt=math.nan), "range on 'price': bound gt is NaN"),
    ("in without values", lambda: _in("tag"), "filter: in on 'tag' has no values"),
    ("in with a list value", lambda: _in("tag", _value(int_value=1), _value(string_list=types_pb2.StringList())),
     "in on 'tag', values[1]: value must be a string, int, float or bool, not a string list"),
    ("in with an unset value", lambda: _in("tag", _value()), "in on 'tag', values[0]: value is not set"),
    ("eq without a value", lambda: types_pb2.Filter(eq=types_pb2.FieldEq(field="x")),
     "filter: eq on 'x': value is not set"),
    ("eq on a NaN", lambda: types_pb2.Filter(eq=types_pb2.FieldEq(field="x", value=_value(float_value=math.nan))),
     "eq on 'x': float value is NaN or infinite"),
    ("eq on a string list",
     lambda: types_pb2.Filter(eq=types_pb2.FieldEq(field="x", value=_value(string_list=types_pb2.StringList()))),
     "not a string list"),
    ("exists with no field", lambda: types_pb2.Filter(exists=types_pb2.FieldExists()),
     "filter.exists: field name is empty"),
    ("contains with a long field", lambda: types_pb2.Filter(contains=types_pb2.FieldContains(field="é" * 65)),
     "filter.contains: field name longer than 128 bytes"),
    ("an empty nested filter", lambda: types_pb2.Filter(**{"or": types_pb2.FilterList(filters=[types_pb2.Filter()])}),
     "filter.or[0]: filter has no kind set"),
    ("not of nothing", _empty_not, "filter.not: filter has no kind set"),
    ("nesting too deep", lambda: _nested_not(MAX_FILTER_DEPTH + 1), "filter nesting deeper than 32"),
]


@pytest.mark.parametrize(
    "make, message", [(m, msg) for _, m, msg in INVALID_FILTERS], ids=[name for name, _, _ in INVALID_FILTERS]
)
def test_invalid_filter_is_refused_with_a_message_saying_where_and_what(
    make: Callable[[], types_pb2.Filter], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        filter_from_proto(make())
    assert message in str(caught.value)
    assert grpc_status_for(caught.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_nesting_exactly_at_the_limit_is_accepted() -> None:
    assert filter_from_proto(_nested_not(MAX_FILTER_DEPTH)) is not None


def test_a_field_name_of_exactly_128_bytes_is_accepted() -> None:
    assert filter_from_proto(types_pb2.Filter(exists=types_pb2.FieldExists(field="é" * 64))) == Exists("é" * 64)


INVALID_METADATA: list[tuple[str, dict[str, types_pb2.Value], str]] = [
    ("unset value", {"x": _value()}, "metadata field 'x': value is not set"),
    ("NaN", {"x": _value(float_value=math.nan)}, "metadata field 'x': float value is NaN or infinite"),
    ("infinity", {"x": _value(float_value=-math.inf)}, "metadata field 'x': float value is NaN or infinite"),
    ("long name", {"n" * 129: _value(int_value=1)}, "metadata: field name longer than 128 bytes"),
    ("empty name", {"": _value(int_value=1)}, "metadata: field name is empty"),
]


@pytest.mark.parametrize(
    "fields, message", [(f, m) for _, f, m in INVALID_METADATA], ids=[name for name, _, _ in INVALID_METADATA]
)
def test_invalid_metadata_is_refused_with_a_message_naming_the_field(
    fields: dict[str, types_pb2.Value], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("'", ".")):
        metadata_from_proto(types_pb2.Metadata(fields=fields))


def test_metadata_errors_carry_the_callers_location() -> None:
    with pytest.raises(InvalidArgument, match=r"points\[3\].metadata field 'x': value is not set"):
        metadata_from_proto(types_pb2.Metadata(fields={"x": _value()}), where="points[3].metadata")


def test_value_from_proto_refuses_unset_and_non_finite_values() -> None:
    with pytest.raises(InvalidArgument, match="value is not set"):
        value_from_proto(_value())
    with pytest.raises(InvalidArgument, match="NaN or infinite"):
        value_from_proto(_value(float_value=math.inf))


@pytest.mark.parametrize(
    "flt, message",
    [
        (Eq("x", ("a",)), "not a list"),  # type: ignore[arg-type]
        (In("x", (1, ("a",))), "not a list"),  # type: ignore[arg-type]
        (Eq("x", 2**63), "does not fit in 64 bits"),
        (Eq("x", None), "unsupported value"),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_filters_that_cannot_be_expressed_on_the_wire_are_refused(flt: Filter, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        filter_to_proto(flt)


def test_metadata_that_cannot_be_expressed_on_the_wire_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="metadata field 'x'"):
        metadata_to_proto({"x": ("a", 1)})  # type: ignore[dict-item]
