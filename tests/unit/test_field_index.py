"""FieldIndex answers every filter exactly as `quiver.filters.matches` does, before and after a snapshot."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.filters import And, Contains, Eq, Exists, Filter, In, Metadata, MetaValue, Not, Or, Range, matches
from shard.field_index import FieldIndex


def _live(n: int, labels: range | list[int] | None = None) -> np.ndarray:
    live = np.zeros(n, dtype=bool)
    live[list(range(n)) if labels is None else list(labels)] = True
    return live


def _hits(index: FieldIndex, flt: Filter, live: np.ndarray) -> list[int]:
    return np.flatnonzero(index.evaluate(flt, live)).tolist()


def _canonical(metadata: Metadata) -> list[tuple[str, str, str]]:
    """Comparable form: keeps int/float/bool apart, and NaN equal to NaN, unlike dict ==."""
    return sorted((name, type(value).__name__, repr(value)) for name, value in metadata.items())


def test_eq_on_a_number_matches_ints_and_floats_numerically_but_never_bools() -> None:
    index = FieldIndex()
    for label, value in enumerate([1, 1.0, True, "1", 2, (1,)[0:0]]):
        index.set(label, {"x": value})
    live = _live(6)
    assert _hits(index, Eq("x", 1), live) == [0, 1]
    assert _hits(index, Eq("x", 1.0), live) == [0, 1]
    assert _hits(index, Eq("x", True), live) == [2]
    assert _hits(index, Eq("x", "1"), live) == [3]
    assert _hits(index, In("x", (2, "1", False)), live) == [3, 4]


def test_ints_beyond_two_to_the_53_compare_exactly_with_floats() -> None:
    index = FieldIndex()
    index.set(0, {"x": 2**53})
    index.set(1, {"x": 2**53 + 1})
    index.set(2, {"x": float(2**53)})
    index.set(3, {"x": 2**63 - 1})
    live = _live(4)
    assert _hits(index, Eq("x", float(2**53)), live) == [0, 2]
    assert _hits(index, Eq("x", 2**53 + 1), live) == [1]
    assert _hits(index, Range("x", gt=float(2**53)), live) == [1, 3]
    assert _hits(index, Range("x", gte=float(2**63)), live) == []
    assert _hits(index, Range("x", lt=2**53 + 1), live) == [0, 2]
    assert _hits(index, Range("x", gt=-math.inf, lt=math.inf), live) == [0, 1, 2, 3]


def test_range_ignores_bools_strings_and_lists() -> None:
    index = FieldIndex()
    for label, value in enumerate([True, "5", ("5",), 5, 5.5]):
        index.set(label, {"x": value})
    assert _hits(index, Range("x", gte=0), _live(5)) == [3, 4]


def test_a_field_may_hold_different_types_on_different_points() -> None:
    index = FieldIndex()
    index.set(0, {"x": "red"})
    index.set(1, {"x": 3})
    index.set(2, {"x": ("red", "blue")})
    index.set(3, {"x": False})
    live = _live(4)
    assert _hits(index, Eq("x", "red"), live) == [0]
    assert _hits(index, Contains("x", "red"), live) == [2]
    assert _hits(index, Exists("x"), live) == [0, 1, 2, 3]
    assert _hits(index, Eq("x", False), live) == [3]


def test_not_is_the_complement_within_live_only() -> None:
    index = FieldIndex()
    for label in range(6):
        index.set(label, {"x": label})
    live = _live(6, [0, 1, 2, 4])
    assert _hits(index, Not(Eq("x", 1)), live) == [0, 2, 4]
    assert _hits(index, Not(Exists("missing")), live) == [0, 1, 2, 4]


def test_empty_and_matches_every_live_label_and_empty_or_none() -> None:
    index = FieldIndex()
    live = _live(5, [1, 3])
    assert _hits(index, And(()), live) == [1, 3]
    assert _hits(index, Or(()), live) == []


def test_live_labels_the_index_never_saw_have_empty_metadata() -> None:
    index = FieldIndex()
    index.set(2, {"x": 1})
    live = _live(1000)
    assert _hits(index, Eq("x", 1), live) == [2]
    assert len(_hits(index, Not(Exists("x")), live)) == 999
    assert index.get(500) == {}


def test_live_shorter_than_the_index_gives_a_result_of_live_length() -> None:
    index = FieldIndex()
    for label in range(100):
        index.set(label, {"x": "a", "n": label, "f": 0.5, "tags": ("t",)})
    for flt in (Eq("x", "a"), In("n", tuple(range(100))), Range("f", gt=0), Contains("tags", "t"), Exists("x")):
        result = index.evaluate(flt, _live(10))
        assert result.shape == (10,) and result.all(), flt


def test_set_replaces_and_remove_forgets_previous_values() -> None:
    index = FieldIndex()
    index.set(0, {"x": "a", "tags": ("t",)})
    index.set(0, {"y": 1})
    live = _live(1)
    assert _hits(index, Eq("x", "a"), live) == []
    assert _hits(index, Contains("tags", "t"), live) == []
    assert _hits(index, Eq("y", 1), live) == [0]
    index.remove(0)
    index.remove(0)  # removing twice is harmless
    assert _hits(index, Exists("y"), live) == []
    assert index.get(0) == {}
    assert len(index) == 0


def test_get_returns_lists_as_tuples_in_a_copy() -> None:
    index = FieldIndex()
    index.set(0, {"tags": ["a", "b"], "n": 1})
    got = index.get(0)
    assert got == {"tags": ("a", "b"), "n": 1}
    got["n"] = 2
    assert index.get(0)["n"] == 1


def test_set_refuses_bad_values_and_leaves_the_label_unchanged() -> None:
    index = FieldIndex()
    index.set(0, {"x": 1})
    with pytest.raises(ValueError, match="64 bits"):
        index.set(0, {"x": 2, "y": 2**64})
    with pytest.raises(TypeError):
        index.set(0, {"x": 2, "y": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        index.set(0, {"x": 2, "y": ("a", 1)})  # type: ignore[dict-item]
    assert index.get(0) == {"x": 1}
    assert _hits(index, Eq("x", 1), _live(1)) == [0]


def test_string_dictionary_codes_are_reused_under_churn() -> None:
    index = FieldIndex()
    for round_ in range(50):
        for label in range(10):
            index.set(label, {"id": f"doc-{round_}-{label}"})
    column = index._fields["id"]
    assert len(column.code_strs) <= 20
    assert len(column.str_to_code) == 10
    assert _hits(index, Eq("id", "doc-49-3"), _live(10)) == [3]


def test_a_field_nobody_holds_any_more_is_dropped() -> None:
    index = FieldIndex()
    index.set(0, {"x": 1})
    index.set(0, {"y": 1})
    assert "x" not in index._fields


def test_snapshot_round_trip_keeps_values_and_types_exactly() -> None:
    index = FieldIndex()
    points: dict[int, Metadata] = {
        0: {"s": "é", "i": -(2**63), "f": -0.0, "b": True, "l": ()},
        1: {"i": 2**63 - 1, "f": 1.0, "b": False, "l": ("x", "x", "y")},
        2: {},
        5: {"f": math.nan, "i": 1.5, "s": 7},
        9: {"f": math.inf, "l": ("y",)},
    }
    for label, metadata in points.items():
        index.set(label, metadata)
    index.remove(1)
    del points[1]
    loaded = FieldIndex.from_bytes(index.to_bytes())
    assert len(loaded) == sum(1 for metadata in points.values() if metadata)  # labels holding any field
    for label, metadata in points.items():
        assert _canonical(loaded.get(label)) == _canonical(metadata)
    live = _live(12)
    for flt in (Contains("l", "y"), Eq("s", 7), Eq("i", 1.5), Exists("l"), Not(Exists("f")), Range("f", lt=0)):
        assert _hits(loaded, flt, live) == _hits(index, flt, live)
    loaded.set(12, {"s": "é", "l": ("x",)})  # a loaded index keeps working incrementally
    assert _hits(loaded, Eq("s", "é"), _live(13)) == [0, 12]


def test_snapshot_of_an_empty_index_loads_empty() -> None:
    loaded = FieldIndex.from_bytes(FieldIndex().to_bytes())
    assert len(loaded) == 0
    assert not loaded.evaluate(Exists("x"), _live(3)).any()


def test_memory_bytes_grows_with_points_and_shrinks_when_they_go() -> None:
    index = FieldIndex()
    empty = index.memory_bytes()
    for label in range(1000):
        index.set(label, {"s": f"v{label}", "n": label, "l": ("a", "b")})
    full = index.memory_bytes()
    assert full > empty + 1000 * 100
    for label in range(1000):
        index.remove(label)
    assert index.memory_bytes() < full / 10


# Property: the index agrees with matches() on random data, random filters and after a snapshot.
# Points come from a seeded `random.Random` so each example holds a few hundred of them (hypothesis's own
# list strategies stay small, and st.randoms() runs out of entropy); values come from small pools so
# filters and points collide often.

FIELDS = ["a", "b", "c", "tags"]
NUMBERS = [0, 1, -1, 2, 1.0, 0.0, -0.0, 2.5, -1.5, 2**53, 2**53 + 1, float(2**53), 2**63 - 1, -(2**63), float(2**63)]
SPECIAL = [math.inf, -math.inf, math.nan]
STRINGS = ["", "x", "y", "1"]
ITEMS = ["x", "y", "z", ""]
N_LABELS = 300
LIVE_LENGTH = 340


def _random_value(rnd: random.Random) -> MetaValue:
    category = rnd.randrange(6)
    if category == 0:
        return rnd.choice(NUMBERS)
    if category == 1:
        return rnd.choice(STRINGS)
    if category == 2:
        return rnd.random() < 0.5
    if category == 3:
        items = [rnd.choice(ITEMS) for _ in range(rnd.randrange(4))]
        return items if rnd.random() < 0.2 else tuple(items)  # type: ignore[return-value]
    if category == 4:
        return rnd.choice(SPECIAL) if rnd.random() < 0.1 else rnd.randrange(-3, 4) / 2
    return rnd.randrange(-3, 4)


def _random_metadata(rnd: random.Random) -> Metadata:
    return {name: _random_value(rnd) for name in FIELDS if rnd.random() < 0.6}


scalars = st.sampled_from(NUMBERS + SPECIAL + STRINGS + [True, False, -3, 3, 0.5, -2.5])
field_names = st.sampled_from(FIELDS + ["zz"])
bounds = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 2.5, -1.5, float(2**53), 2**53 + 1, 2**70, -(2**70), math.inf, -math.inf, math.nan]),
    st.integers(-4, 4).map(lambda i: i / 2),
)
leaves = st.one_of(
    st.builds(Eq, field_names, st.one_of(scalars, st.just(("x",)))),
    st.builds(In, field_names, st.lists(scalars, max_size=4).map(tuple)),
    st.builds(Range, field_names, bounds, bounds, bounds, bounds),
    st.builds(Exists, field_names),
    st.builds(Contains, field_names, st.sampled_from(ITEMS + ["1"])),
)


def filters(depth: int) -> st.SearchStrategy[Filter]:
    if depth == 0:
        return leaves
    children = st.lists(filters(depth - 1), max_size=3).map(tuple)
    return st.one_of(leaves, children.map(And), children.map(Or), filters(depth - 1).map(Not))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(0, 600),
    flts=st.lists(filters(3), min_size=1, max_size=8),
)
def test_evaluate_agrees_with_matches_on_random_points_and_filters(
    seed: int, n_ops: int, flts: list[Filter]
) -> None:
    rnd = random.Random(seed)
    index = FieldIndex()
    model: dict[int, Metadata] = {}

    def check(indexes: list[FieldIndex]) -> None:
        # The caller's live set: most stored labels, some hidden, some it knows of but never gave metadata.
        live = np.zeros(LIVE_LENGTH, dtype=bool)
        live[[label for label in model if rnd.random() < 0.9]] = True
        live[[rnd.randrange(LIVE_LENGTH) for _ in range(20)]] = True
        for flt in flts:
            expected = [label for label in range(LIVE_LENGTH) if live[label] and matches(flt, model.get(label, {}))]
            for checked in indexes:
                assert _hits(checked, flt, live) == expected, flt

    for _ in range(n_ops):
        label = rnd.randrange(N_LABELS)
        if rnd.random() < 0.15:
            index.remove(label)
            model.pop(label, None)
        else:
            metadata = _random_metadata(rnd)
            index.set(label, metadata)
            model[label] = {k: tuple(v) if isinstance(v, list) else v for k, v in metadata.items()}
        if rnd.random() < 0.01:
            check([index])  # mid-stream too, so stale caches between writes would show
    loaded = FieldIndex.from_bytes(index.to_bytes())
    for label in range(LIVE_LENGTH):
        assert _canonical(index.get(label)) == _canonical(model.get(label, {}))
        assert _canonical(loaded.get(label)) == _canonical(model.get(label, {}))
    check([index, loaded])


def test_every_leaf_over_a_grid_of_values_and_bounds_agrees_with_matches() -> None:
    """Exhaustive over the edge values: int/float/bool equality, fractional, huge, infinite and NaN bounds."""
    values: list[MetaValue] = [*NUMBERS, *SPECIAL, *STRINGS, True, False, -3, 3, 0.5, -2.5, 2**70 // 2**20, ()]
    values += [("x",), ("x", "y"), 2**53 - 1, -(2**53) - 1, 5e-324, 1.7976931348623157e308]
    index = FieldIndex()
    for label, value in enumerate(values):
        index.set(label, {"v": value})
    live = _live(len(values) + 3)
    wanted: list[object] = [*values, 2**64, -(2**64), 2**53 + 0.5, ("x",)]
    bound_values: list[float] = [-4, -2.5, -1, -0.5, 0, 0.5, 1, 2, 2.5, 3, float(2**53), 2**53 + 1, 2**53 - 1]
    bound_values += [float(2**63), 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**70, -(2**70), math.inf, -math.inf]
    bound_values += [math.nan, 1e308, -1e308, 5e-324]
    leaves: list[Filter] = [Eq("v", w) for w in wanted]  # type: ignore[arg-type]
    leaves += [In("v", (a, b)) for a, b in zip(wanted, wanted[3:])]  # type: ignore[arg-type]
    leaves += [Range("v", **{op: b}) for op in ("gt", "gte", "lt", "lte") for b in bound_values]
    leaves += [Contains("v", item) for item in ITEMS] + [Exists("v"), Range("v")]
    for flt in leaves:
        expected = [label for label in range(len(live)) if matches(flt, index.get(label))]
        assert _hits(index, flt, live) == expected, flt


def test_an_int_bound_no_double_can_hold_compares_as_the_infinity_beyond_it() -> None:
    index = FieldIndex()
    index.set(0, {"x": 1.5})
    index.set(1, {"x": -1e308})
    index.set(2, {"x": math.inf})
    live = _live(3)
    huge = 10**400  # float(huge) overflows; Python still orders it: every finite double < huge < inf
    assert _hits(index, Range("x", lt=huge), live) == [0, 1]
    assert _hits(index, Range("x", gt=huge), live) == [2]
    assert _hits(index, Range("x", gt=-huge), live) == [0, 1, 2]
    assert _hits(index, Range("x", lte=-huge), live) == []


def test_memory_estimate_counts_each_part_and_returns_to_its_start_when_points_go() -> None:
    index = FieldIndex()
    index.set(0, {"seed": 1})  # the columns exist from here on; only strings and postings come and go
    start = index.memory_bytes()
    texts = [f"value-{n:04d}-" + "x" * 40 for n in range(50)]
    for label, text in enumerate(texts, start=1):
        index.set(label, {"s": text, "tags": [text, f"tag{label}"]})
    grown = index.memory_bytes()
    # At least the strings themselves are counted, once per distinct string, with its dictionary entry.
    assert grown - start >= sum(len(t) for t in texts) + 50 * len("tag00")
    for label in range(1, len(texts) + 1):
        index.remove(label)
    after = index.memory_bytes()
    assert start <= after < start + (grown - start) // 4  # the strings and postings are released (columns may stay)


def test_memory_accounting_after_removals_matches_an_index_rebuilt_from_its_snapshot():
    """Incremental bookkeeping (postings added and dropped one by one) agrees with a from-scratch count."""
    index = FieldIndex()
    index.set(0, {"tags": ("a", "b"), "lang": "en", "n": 3})
    index.set(1, {"tags": ("c", "a"), "lang": "de", "n": 1.5})
    index.set(2, {"tags": ("d",)})
    index.set(3, {"tags": ("a", "e", "f")})
    index.remove(1)
    index.remove(3)
    assert index.memory_bytes() == FieldIndex.from_bytes(index.to_bytes()).memory_bytes()


@pytest.mark.parametrize(("damage", "message"), [
    (lambda arrays: arrays.update({"1.kind": arrays["1.kind"][:-1]}), "field index snapshot is corrupt: bad kind column"),
    (lambda arrays: arrays.update({"0.list_lengths": arrays["0.list_lengths"][:-1]}),
     "field index snapshot is corrupt: string lists do not match the kind column"),
    (lambda arrays: arrays["schema_of"].__setitem__(1, 0), "field index snapshot is corrupt: a column has an unknown label"),
    (lambda arrays: arrays["schema_of"].__setitem__(1, 9), "field index snapshot is corrupt: bad schema column"),
])
def test_a_damaged_field_index_snapshot_is_refused_with_what_is_wrong(damage, message):
    import io

    index = FieldIndex()
    index.set(0, {"tags": ("a", "b"), "lang": "en"})
    index.set(1, {"tags": ("c",), "lang": "de"})
    with np.load(io.BytesIO(index.to_bytes()), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    damage(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    with pytest.raises(ValueError) as refused:
        FieldIndex.from_bytes(buffer.getvalue())
    assert str(refused.value) == message


def test_a_version_1_snapshot_written_by_the_previous_layout_loads_with_every_value_and_filter_intact():
    """tests/unit/data/field_index_v1.npz was written by the field index as of commit 3cfb173 (metadata dicts
    per point) from these points, with label 1 removed after it was set."""
    from pathlib import Path

    points: dict[int, Metadata] = {
        0: {"s": "é", "i": -(2**63), "f": -0.0, "b": True, "l": ()},
        5: {"f": math.nan, "i": 1.5, "s": 7},
        9: {"f": math.inf, "l": ("y",)},
        70: {"lang": "en", "n": 3},
    }
    loaded = FieldIndex.from_bytes((Path(__file__).parent / "data" / "field_index_v1.npz").read_bytes())
    assert len(loaded) == len(points)
    for label in range(80):
        assert _canonical(loaded.get(label)) == _canonical(points.get(label, {}))
    rebuilt = FieldIndex()
    for label, metadata in points.items():
        rebuilt.set(label, metadata)
    live = _live(80)
    for flt in (Contains("l", "y"), Eq("s", 7), Eq("i", 1.5), Exists("l"), Not(Exists("f")), Range("f", lt=0), Eq("lang", "en")):
        assert _hits(loaded, flt, live) == _hits(rebuilt, flt, live)
    loaded.remove(70)
    assert loaded.get(70) == {} and not _hits(loaded, Exists("lang"), live)


def test_columns_filled_label_by_label_keep_their_spare_capacity_within_an_eighth() -> None:
    """At 10M labels a doubled column held 16.7M rows, with its -1 and NaN fills written: two thirds more than
    the points needed."""
    fields = FieldIndex()
    n = 150_000
    for label in range(n):
        fields.set(label, {"category": "news", "year": 2000 + label % 20, "score": label / n})
    # kind (1 B per field), code 4, int 8, float 8, and the 1-byte schema id per label (one schema): 24 B.
    columns = sum(column.nbytes() - column.dict_bytes for column in fields._fields.values()) + fields._schema_of.nbytes
    assert 24 * n <= columns <= 24 * (n + n // 8 + 1)


def test_the_schema_column_widens_past_256_schemas_and_every_label_keeps_its_fields() -> None:
    fields = FieldIndex()
    fields.set(0, {"a": 1})
    assert fields._schema_of.dtype == np.uint8
    expected = {label: {f"f{label}": label, "a": "x"} for label in range(1, 300)}  # 300 schemas with {"a"}
    for label, metadata in expected.items():
        fields.set(label, metadata)
    assert fields._schema_of.dtype == np.uint16
    expected[0] = {"a": 1}
    for index in (fields, FieldIndex.from_bytes(fields.to_bytes())):
        assert all(index.get(label) == metadata for label, metadata in expected.items())
        assert index._schema_of.dtype == np.uint16
        assert list(index.get(299)) == ["f299", "a"]  # keys in the order they were set
