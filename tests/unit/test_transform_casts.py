"""Every cast: what converts, to what, and the reason when it cannot."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from tidesync.event import ChangeEvent
from tidesync.transform import compile_transforms
from tidesync.transform.casts import CAST_TYPES, CONVERTERS, CastFailure

UTC = dt.UTC
CEST = dt.timezone(dt.timedelta(hours=2))

OK: list[tuple[str, Any, Any]] = [
    # string: a phone number keeps its + and leading zeros
    ("string", "+49 030 1234", "+49 030 1234"),
    ("string", "0049301234", "0049301234"),
    ("string", 42, "42"),
    ("string", True, "true"),
    ("string", False, "false"),
    ("string", 0.1, "0.1"),
    ("string", Decimal("1E+3"), "1000"),
    ("string", Decimal("12.50"), "12.50"),
    ("string", dt.date(2024, 1, 2), "2024-01-02"),
    ("string", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05+00:00"),
    ("string", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("string", b"caf\xc3\xa9", "café"),
    ("string", dt.timedelta(days=1, seconds=2, microseconds=500000), "P1DT2.5S"),
    ("string", {"a": [1, 2]}, '{"a":[1,2]}'),
    # int
    ("int", 7, 7),
    ("int", " 42 ", 42),
    ("int", "-3", -3),
    ("int", "3.0", 3),
    ("int", 3.0, 3),
    ("int", Decimal("5.00"), 5),
    ("int", True, 1),
    # float
    ("float", 1, 1.0),
    ("float", "2.5", 2.5),
    ("float", Decimal("0.1"), 0.1),
    ("float", 1.5, 1.5),
    # decimal
    ("decimal", "12.30", Decimal("12.30")),
    ("decimal", 3, Decimal(3)),
    ("decimal", 0.1, Decimal("0.1")),
    ("decimal", Decimal("1.5"), Decimal("1.5")),
    # bool
    ("bool", "TRUE", True),
    ("bool", " no ", False),
    ("bool", "t", True),
    ("bool", "F", False),
    ("bool", "Yes", True),
    ("bool", "1", True),
    ("bool", "0", False),
    ("bool", 1, True),
    ("bool", 0, False),
    ("bool", False, False),
    # timestamp: aware, naive means UTC, numbers are epoch seconds
    ("timestamp", "2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("timestamp", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("timestamp", "2024-01-02T05:04:05+02:00", dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=CEST)),
    ("timestamp", 0, dt.datetime(1970, 1, 1, tzinfo=UTC)),
    ("timestamp", 1.5, dt.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
    ("timestamp", Decimal("1.25"), dt.datetime(1970, 1, 1, 0, 0, 1, 250000, tzinfo=UTC)),
    ("timestamp", dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, tzinfo=UTC)),
    ("timestamp", dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, tzinfo=UTC)),
    # date
    ("date", "2024-01-02", dt.date(2024, 1, 2)),
    ("date", "2024-01-02T00:00:00", dt.date(2024, 1, 2)),
    ("date", dt.datetime(2024, 1, 2), dt.date(2024, 1, 2)),
    ("date", dt.date(2024, 1, 2), dt.date(2024, 1, 2)),
    # iso8601
    ("iso8601", dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05+00:00"),
    ("iso8601", dt.date(2024, 1, 2), "2024-01-02"),
    ("iso8601", dt.time(3, 4), "03:04:00"),
    ("iso8601", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
    ("iso8601", 0, "1970-01-01T00:00:00+00:00"),
    # epoch / epoch_ms: floored to the unit asked for
    ("epoch", dt.datetime(1970, 1, 2, tzinfo=UTC), 86400),
    ("epoch", dt.datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=UTC), 1),
    ("epoch", dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), -1),
    ("epoch", "1970-01-01T01:00:00+01:00", 0),
    ("epoch", dt.date(1970, 1, 2), 86400),
    ("epoch", 1700000000, 1700000000),
    ("epoch", 1700000000.0, 1700000000),
    ("epoch_ms", dt.datetime(1970, 1, 1, 0, 0, 1, 234567, tzinfo=UTC), 1234),
    ("epoch_ms", dt.datetime(1970, 1, 1, 0, 0, 1), 1000),
    ("epoch_ms", 1.5, 1500),
    # json
    ("json", '{"a": [1, null]}', {"a": [1, None]}),
    ("json", b"[1, 2]", [1, 2]),
    ("json", {"a": 1}, {"a": 1}),
    ("json", [1], [1]),
    ("json", 3, 3),
]

FAIL: list[tuple[str, Any, str]] = [
    ("string", b"\xff", "cannot convert b'\\xff' to string: not valid UTF-8"),
    ("string", object, "cannot convert <class 'object'> to string"),
    ("int", "abc", "cannot convert 'abc' to int"),
    ("int", "3.5", "cannot convert '3.5' to int: not a whole number"),
    ("int", 3.5, "cannot convert 3.5 to int: not a whole number"),
    ("int", float("nan"), "cannot convert nan to int: not a whole number"),
    ("int", Decimal("2.01"), "cannot convert Decimal('2.01') to int: not a whole number"),
    ("int", "1_000", "cannot convert '1_000' to int"),
    ("int", "", "cannot convert '' to int"),
    ("int", dt.date(2024, 1, 2), "cannot convert date 2024-01-02 to int"),
    ("float", "abc", "cannot convert 'abc' to float"),
    ("float", "inf", "cannot convert 'inf' to float: not a finite number"),
    ("float", 10**400, "to float: out of range"),
    ("float", [1], "cannot convert [1] to float"),
    ("decimal", "abc", "cannot convert 'abc' to decimal"),
    ("decimal", "NaN", "cannot convert 'NaN' to decimal: not a finite number"),
    ("decimal", float("inf"), "cannot convert inf to decimal: not a finite number"),
    ("decimal", dt.date(2024, 1, 2), "cannot convert date 2024-01-02 to decimal"),
    ("bool", "maybe", "cannot convert 'maybe' to bool"),
    ("bool", 2, "cannot convert 2 to bool"),
    ("bool", 1.0, "cannot convert 1.0 to bool"),
    ("bool", "", "cannot convert '' to bool"),
    ("timestamp", "yesterday", "cannot convert 'yesterday' to timestamp"),
    ("timestamp", "1700000000", "cannot convert '1700000000' to timestamp"),
    ("timestamp", True, "cannot convert True to timestamp"),
    ("timestamp", 10**20, "cannot convert 100000000000000000000 to timestamp"),
    (
        "date",
        dt.datetime(2024, 1, 2, 3, 4),
        "cannot convert datetime 2024-01-02T03:04:00 to date: it has a time of day",
    ),
    ("date", "2024-01-02T10:00", "cannot convert '2024-01-02T10:00' to date: it has a time of day"),
    ("date", "2024-13-45", "cannot convert '2024-13-45' to date"),
    ("date", 20240102, "cannot convert 20240102 to date"),
    ("iso8601", "not a date", "cannot convert 'not a date' to iso8601"),
    ("iso8601", True, "cannot convert True to iso8601"),
    ("epoch", 1.5, "cannot convert 1.5 to epoch: not a whole number of seconds"),
    ("epoch", "soon", "cannot convert 'soon' to epoch"),
    ("epoch_ms", True, "cannot convert True to epoch_ms"),
    ("json", "{not json", "cannot convert '{not json' to json: not valid JSON"),
    ("json", Decimal("1"), "cannot convert Decimal('1') to json"),
]


@pytest.mark.parametrize(("type_", "value", "expected"), OK)
def test_cast_converts(type_: str, value: Any, expected: Any) -> None:
    result = CONVERTERS[type_](value)
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(expected, dt.datetime):
        assert result.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(("type_", "value", "message"), FAIL)
def test_cast_failure_names_value_and_type(type_: str, value: Any, message: str) -> None:
    with pytest.raises(CastFailure) as info:
        CONVERTERS[type_](value)
    assert message in str(info.value)


def test_every_cast_type_has_success_and_failure_cases() -> None:
    assert {t for t, _, _ in OK} == set(CAST_TYPES)
    assert {t for t, _, _ in FAIL} == set(CAST_TYPES)


def test_timestamp_from_naive_string_is_aware_utc() -> None:
    result = CONVERTERS["timestamp"]("2024-06-01T12:00:00")
    assert result.tzinfo is not None
    assert result.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("type_", CAST_TYPES)
def test_none_stays_none_for_every_cast(type_: str) -> None:
    transform = compile_transforms([{"cast": {"v": type_}}])
    event = ChangeEvent("t", (1,), "insert", after={"id": 1, "v": None})
    out, failures = transform.apply([event])
    assert failures == []
    assert out[0].after == {"id": 1, "v": None}


def test_cast_step_reason_names_step_field_and_value() -> None:
    transform = compile_transforms([{"cast": {"phone": "string", "score": "decimal"}}])
    good = ChangeEvent("t", (1,), "insert", after={"phone": "+49 030 1234", "score": "1.10"})
    bad = ChangeEvent("t", (2,), "insert", after={"phone": "+49 030 1234", "score": "abc"})
    out, failures = transform.apply([good, bad])
    assert out[0].after == {"phone": "+49 030 1234", "score": Decimal("1.10")}
    assert failures == [(bad, "cast score: cannot convert 'abc' to decimal")]
    assert failures[0][0] is bad
    assert bad.after == {"phone": "+49 030 1234", "score": "abc"}  # the original, untouched


def test_cast_failure_in_before_image_keeps_the_value_and_applies_the_update() -> None:
    # The update that repairs a bad value must not be dead-lettered because of the value it replaces.
    transform = compile_transforms([{"cast": {"age": "int"}}])
    event = ChangeEvent("t", (1,), "update", before={"age": "x"}, after={"age": "3"}, changed=("age",))
    out, failures = transform.apply([event])
    assert failures == []
    assert [(e.before, e.after) for e in out] == [({"age": "x"}, {"age": 3})]


def test_cast_never_half_applies() -> None:
    # The first cast succeeds, the second fails: the event is reported as it came in.
    transform = compile_transforms([{"rename": {"a": "b"}}, {"cast": {"b": "int", "c": "int"}}])
    event = ChangeEvent("t", (1,), "insert", after={"a": "1", "c": "zz"})
    out, failures = transform.apply([event])
    assert out == []
    assert failures == [(event, "cast c: cannot convert 'zz' to int")]
    assert event.after == {"a": "1", "c": "zz"}
