"""Text-format converters: the special values and the array grammar (the real server is in the integration tests)."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.sources.postgres.pgoutput import Relation, RelationColumn
from tidesync.sources.postgres.relation import RelationFacts, build_relation
from tidesync.sources.postgres.types import (
    TypeInfo,
    TypeMap,
    parse_array,
    to_bytea,
    to_date,
    to_decimal,
    to_interval,
    to_json,
    to_time,
    to_timestamp,
    to_timestamptz,
    typmod_facts,
)

UTC = dt.UTC


def test_numeric_specials() -> None:
    assert to_decimal(b"12.3400") == Decimal("12.3400")
    assert str(to_decimal(b"12.3400")) == "12.3400"
    assert to_decimal(b"NaN").is_nan()
    assert to_decimal(b"Infinity") == Decimal("Infinity")
    assert to_decimal(b"-Infinity") == Decimal("-Infinity")


def test_float_specials() -> None:
    tm = TypeMap()
    f = tm.converter(701)
    assert math.isnan(f(b"NaN"))
    assert f(b"Infinity") == math.inf and f(b"-Infinity") == -math.inf
    assert f(b"0.1") == 0.1


def test_dates_and_times() -> None:
    assert to_date(b"2024-02-29") == dt.date(2024, 2, 29)
    assert to_date(b"infinity") == dt.date.max
    assert to_date(b"-infinity") == dt.date.min
    assert to_date(b"0044-03-15 BC") == "0044-03-15 BC"
    assert to_timestamp(b"2024-01-02 03:04:05.5") == dt.datetime(2024, 1, 2, 3, 4, 5, 500000)
    assert to_timestamp(b"infinity") == dt.datetime.max
    assert to_timestamptz(b"2024-01-02 03:04:05.123456+00") == dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert to_timestamptz(b"2024-01-02 03:04:05+05:30") == dt.datetime(2024, 1, 1, 21, 34, 5, tzinfo=UTC)
    assert to_timestamptz(b"-infinity") == dt.datetime.min.replace(tzinfo=UTC)
    assert to_time(b"23:59:59.999999") == dt.time(23, 59, 59, 999999)
    assert to_time(b"24:00:00") == "24:00:00"
    tz = to_time(b"12:00:00-08")
    assert isinstance(tz, dt.time) and tz.utcoffset() == dt.timedelta(hours=-8)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (b"00:00:00", dt.timedelta(0)),
        (b"1 day", dt.timedelta(days=1)),
        (b"-1 days +02:03:00", dt.timedelta(days=-1, hours=2, minutes=3)),
        (b"-00:00:01.5", dt.timedelta(seconds=-1.5)),
        (b"100:00:00", dt.timedelta(hours=100)),
        (b"1 year 2 mons 3 days 04:05:06.789", dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6.789)),
        (b"-2 mons", dt.timedelta(days=-60)),
    ],
)
def test_intervals(text: bytes, expect: dt.timedelta) -> None:
    assert to_interval(text) == expect


def test_bytea_and_json() -> None:
    assert to_bytea(b"\\x00ff10") == b"\x00\xff\x10"
    assert to_bytea(b"a\\\\b\\001") == b"a\\b\x01"
    assert to_json(b'{"a": [1, 2.5, null, "x"], "b": 123456789012345678901234567890}') == {
        "a": [1, 2.5, None, "x"],
        "b": 123456789012345678901234567890,
    }
    assert to_json(b"1e400") == math.inf


def test_arrays() -> None:
    tm = TypeMap()
    ints = tm.converter(1007)
    assert ints(b"{}") == []
    assert ints(b"{1,2,NULL,-3}") == [1, 2, None, -3]
    assert ints(b"{{1,2},{3,4}}") == [[1, 2], [3, 4]]
    assert ints(b"[0:1]={7,8}") == [7, 8]
    texts = tm.converter(1009)
    assert texts(b'{a,"b,c","NULL",NULL,"say \\"hi\\"","back\\\\slash",""," sp "}') == [
        "a",
        "b,c",
        "NULL",
        None,
        'say "hi"',
        "back\\slash",
        "",
        " sp ",
    ]
    assert tm.converter(1231)(b"{1.5,NaN}")[0] == Decimal("1.5")
    assert tm.converter(2951)(b"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}") == [
        UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    ]
    assert tm.converter(1001)(b'{"\\\\x0102",NULL}') == [b"\x01\x02", None]
    assert tm.converter(3807)(b'{"{\\"a\\": 1}",NULL}') == [{"a": 1}, None]


@given(
    st.lists(
        st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))),
        max_size=6,
    )
)
def test_text_arrays_round_trip_through_the_postgres_quoting_rules(items: list[str | None]) -> None:
    def quote(s: str | None) -> str:
        if s is None:
            return "NULL"
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = ("{" + ",".join(quote(s) for s in items) + "}").encode()
    assert parse_array(text, bytes.decode) == items


def test_domains_enums_and_unknown_types_resolve_through_the_type_map() -> None:
    tm = TypeMap()
    tm.add(TypeInfo(50000, "public", "mood", "e"))
    tm.add(TypeInfo(50001, "public", "_mood", "a", elem_oid=50000))
    tm.add(TypeInfo(50002, "public", "posint", "d", base_oid=23))
    tm.add(TypeInfo(50003, "public", "_posint", "a", elem_oid=50002))
    assert tm.missing({50000, 50001, 50002, 23, 1007, 60000}) == {60000}
    assert tm.converter(50000)(b"happy") == "happy"
    assert tm.converter(50001)(b"{happy,sad}") == ["happy", "sad"]
    assert tm.converter(50002)(b"42") == 42
    assert tm.converter(50003)(b"{1,NULL}") == [1, None]
    assert tm.converter(869)(b"10.0.0.1/32") == "10.0.0.1/32"
    assert tm.portable(50000) == ("string", None)
    assert tm.portable(50002) == ("int32", None)
    assert tm.portable(50003) == ("array", "int32")
    assert tm.portable(869) == ("unknown", None)
    assert tm.native(50001) == "mood[]"


def test_typmod_facts() -> None:
    assert typmod_facts("decimal", ((10 << 16) | 2) + 4) == {"precision": 10, "scale": 2}
    assert typmod_facts("string", 20 + 4) == {"length": 20}
    assert typmod_facts("string", -1) == {}


def test_relation_keys_schema_and_identity() -> None:
    tm = TypeMap()
    rel = Relation(
        None,
        7,
        "public",
        "t",
        "f",
        (RelationColumn(1, "id", 23, -1), RelationColumn(1, "v", 1043, 14), RelationColumn(1, "n", 1700, -1)),
    )
    full = build_relation(rel, tm, RelationFacts(primary_key=("id",), not_null=frozenset({"v"})))
    assert full.key == ("id",) and full.identity == ("id", "v", "n")
    assert full.schema.primary_key == ("id",)
    assert [(c.name, c.type, c.nullable, c.length) for c in full.schema.columns] == [
        ("id", "int32", False, None),
        ("v", "string", False, 10),
        ("n", "decimal", True, None),
    ]
    assert full.key_of({"id": 3, "v": "x"}) == (3,)
    keyless = build_relation(rel, tm, RelationFacts())
    assert keyless.key == ("id", "v", "n")
    assert keyless.key_of({"id": 1, "v": "a", "n": None}) == (1, "a", None)
    # events are keyed by the whole row, but a table made from the schema gets no key: append-only
    assert keyless.schema.primary_key == ()
    assert all(c.nullable for c in keyless.schema.columns)
