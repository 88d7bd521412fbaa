"""The event codecs never raise RecursionError: a value nested past MAX_DEPTH is a typed ValueTooDeep.

Also the intake's shape check (:mod:`tidesync.sources.webhook.limits`): iterative, so no depth breaks it.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidesync.event import (
    MAX_DEPTH,
    ChangeEvent,
    ValueTooDeep,
    check_depth,
    from_json,
    from_msgpack,
    json_dumps,
    pack_value,
    to_json,
    to_msgpack,
    unpack_value,
)
from tidesync.sources.webhook.limits import ShapeError, ShapeLimits


def nest(levels: int, kinds: str = "dlt") -> Any:
    """``levels`` containers nested in each other, cycling through dict/list/tuple (built by a loop)."""
    value: Any = "leaf"
    for i in range(levels):
        kind = kinds[i % len(kinds)]
        value = {"k": value} if kind == "d" else [value] if kind == "l" else (value,)
    return value


def event(after: Any) -> ChangeEvent:
    return ChangeEvent("public.docs", (1,), "insert", after={"doc": after}, position=(7,))


# msgpack (the state store, the dead-letter queue) and check_depth refuse exactly past MAX_DEPTH;
# the JSON forms check nothing on the way in (they are on the webhook sink's hot path) and turn
# the encoder's own recursion failure into the same typed error.
EXACT = {
    "pack_value": pack_value,
    "to_msgpack": lambda v: to_msgpack(event(v)),
    "check_depth": check_depth,
}
JSON = {
    "to_json": lambda v: to_json(event(v)),
    "json_dumps": json_dumps,
}
CASES = [(name, f, n) for name, f in EXACT.items() for n in (MAX_DEPTH + 1, 1_000, 100_000)] + [
    (name, f, n) for name, f in JSON.items() for n in (1_000, 100_000)
]


@pytest.mark.parametrize(("name", "encode", "levels"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_every_encoder_refuses_a_value_past_the_limit_with_a_typed_error(name: str, encode: Any, levels: int) -> None:
    value = nest(levels, "dl")  # JSON-like: also what the JSON encoders would meet
    with pytest.raises(ValueTooDeep, match=f"value nested deeper than {MAX_DEPTH} levels") as info:
        encode(value)
    assert isinstance(info.value, ValueError), name  # callers that park bad values on ValueError keep working


@pytest.mark.parametrize("kinds", ["d", "l", "t", "dlt"])
def test_a_value_at_the_limit_round_trips_through_msgpack_and_json(kinds: str) -> None:
    value = nest(MAX_DEPTH, kinds)
    check_depth(value)
    assert unpack_value(pack_value(value)) == value
    row = {"doc": nest(MAX_DEPTH - 1, kinds)}  # the row itself is the first level
    ev = ChangeEvent("public.docs", (1,), "insert", after=row, position=(7,))
    assert from_msgpack(to_msgpack(ev)) == ev
    assert from_json(to_json(ev)).after is not None
    with pytest.raises(ValueTooDeep):
        check_depth(value, MAX_DEPTH - 1)


def test_the_limit_holds_however_deep_the_calling_stack_already_is() -> None:
    value, row = nest(MAX_DEPTH, "dlt"), {"doc": nest(MAX_DEPTH - 1, "dl")}

    def at_depth(frames: int) -> tuple[bytes, bytes]:
        if frames:
            return at_depth(frames - 1)
        return pack_value(value), to_json(event(row))

    # A pipeline encodes from inside the event loop, a web framework, a test runner: a few hundred frames.
    packed, _ = at_depth(min(250, sys.getrecursionlimit() - 600))
    assert unpack_value(packed) == value


def test_foreign_bytes_nested_too_deep_decode_to_a_typed_error() -> None:
    deep_msgpack = b"\x91" * 5_000 + b"\x01"  # 5,000 one-item arrays: not made by pack_value
    with pytest.raises(ValueTooDeep):
        unpack_value(deep_msgpack)
    deep_event = msgspec.msgpack.encode(["e", [1], "insert", None, None, None, [], 0.0, None, None])
    deep_event = deep_event.replace(b"\xc0", b"\x91" * 5_000 + b"\xc0", 1)  # before: a deep list
    with pytest.raises(ValueTooDeep):
        from_msgpack(deep_event)
    deep_json = b'{"entity":"e","key":[1],"op":"insert","after":{"a":' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    with pytest.raises(ValueTooDeep):
        from_json(deep_json)


def test_exact_types_survive_the_codec() -> None:
    row = {
        "n": Decimal("1.50"),
        "u": uuid.UUID(int=5),
        "at": dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
        "d": dt.date(2024, 5, 1),
        "t": dt.time(1, 2, 3),
        "span": dt.timedelta(days=1, seconds=2, microseconds=3),
        "nested": {"list": [1, (2, Decimal("3"))], "none": None, "bool": True, "bytes": b"\x00"},
    }
    assert unpack_value(pack_value(row)) == row
    ev = ChangeEvent("public.t", (1, "a"), "update", before=row, after=row, changed=("n",), position=(9, 1))
    assert from_msgpack(to_msgpack(ev)) == ev


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_any_value_within_the_limit_round_trips(value: Any) -> None:
    assert unpack_value(pack_value(value)) == value


# --- the intake's shape check -------------------------------------------------------------------


def test_shape_check_is_iterative_and_names_the_limit() -> None:
    limits = ShapeLimits(max_depth=64, max_width=100, max_values=1_000)
    limits.check(nest(64, "dl"))
    for levels in (65, 900, 200_000):  # far past the interpreter's recursion limit: still a clean answer
        with pytest.raises(ShapeError, match="nested deeper than 64 levels") as info:
            limits.check(nest(levels, "dl"))
        assert info.value.reason == "too_deep"
    with pytest.raises(ShapeError, match="more than 100 keys in one object") as info:
        limits.check({"a": {str(i): i for i in range(101)}})
    assert info.value.reason == "too_wide"
    with pytest.raises(ShapeError, match="more than 100 items in one array"):
        limits.check([list(range(101))])
    with pytest.raises(ShapeError, match="more than 1000 values") as info:
        limits.check([list(range(100)) for _ in range(10)])  # 10 + 1,000 values
    assert info.value.reason == "too_many_values"
    limits.check([list(range(99)) for _ in range(10)])  # 1,000 values exactly
    for scalar in (None, 1, "x", 1.5, True):
        limits.check(scalar)
