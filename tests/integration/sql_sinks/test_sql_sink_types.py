"""Every portable type on every database: created from the entity's schema, written, updated, read back.

What each database gives back is spelled out per database (see
tidesync.sinks.sql.typemap for why): Postgres keeps every type; MariaDB keeps
timestamps as UTC wall-clock time, TIME as a timedelta, booleans as 0/1,
intervals as microseconds and JSON as text; SQLite keeps text for what it has
no type for.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from tests.integration.sql_sinks.helpers import Dest
from tidesync.event import ChangeEvent
from tidesync.schema import Column, EntitySchema

PLUS2 = dt.timezone(dt.timedelta(hours=2))
UID = uuid.UUID("0b7c6b1e-34f5-4b8e-9a55-1c2d3e4f5a6b")

SCHEMA = EntitySchema(
    "public.typed",
    (
        Column("id", "int64", nullable=False),
        Column("code", "string", nullable=False, length=10),
        Column("small", "int16"),
        Column("i32", "int32"),
        Column("big", "int64"),
        Column("price", "decimal", precision=12, scale=4),
        Column("huge", "decimal"),
        Column("f32", "float32"),
        Column("f64", "float64"),
        Column("label", "string", length=60),
        Column("note", "string"),
        Column("flag", "bool"),
        Column("day", "date"),
        Column("at_time", "time"),
        Column("at_timetz", "timetz"),
        Column("ts", "timestamp"),
        Column("tstz", "timestamptz"),
        Column("span", "interval"),
        Column("uid", "uuid"),
        Column("doc", "json"),
        Column("list_doc", "json"),
        Column("raw", "bytes"),
        Column("nums", "array", item="int32"),
    ),
    primary_key=("id", "code"),
)

V1: dict[str, Any] = {
    "id": 1,
    "code": "a-1",
    "small": 32000,
    "i32": 2_000_000_000,
    "big": 9_000_000_000_000_000_000,
    "price": Decimal("12345678.1234"),
    "huge": Decimal("123456789012345678901234567890.123456789"),
    "f32": 1.5,
    "f64": 1.0000000001,
    "label": "héllo ✓ 'single' \"double\" \\ %s ?",
    "note": "x" * 5000,
    "flag": True,
    "day": dt.date(2024, 2, 29),
    "at_time": dt.time(13, 14, 15, 123456),
    "at_timetz": dt.time(13, 14, 15, tzinfo=PLUS2),
    "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
    "tstz": dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS2),
    "span": dt.timedelta(days=3, seconds=3723, microseconds=456),
    "uid": UID,
    "doc": {"a": [1, 2, {"b": None}], "s": "x"},
    "list_doc": [1, "two", 3.5],
    "raw": b"\x00\xff\x10binary",
    "nums": [1, 2, 3],
}
# Every field changes in the update, so the update path of each database converts every type too.
V2: dict[str, Any] = {
    "id": 1,
    "code": "a-1",
    "small": -5,
    "i32": -7,
    "big": 1,
    "price": Decimal("-0.0001"),
    "huge": Decimal("-1.5"),
    "f32": -2.25,
    "f64": 3.5e100,
    "label": "",
    "note": None,
    "flag": False,
    "day": dt.date(1999, 12, 31),
    "at_time": dt.time(0, 0),
    "at_timetz": dt.time(1, 30, tzinfo=dt.UTC),
    "ts": dt.datetime(1999, 12, 31, 23, 59, 59),
    "tstz": dt.datetime(2000, 1, 1, 0, 30, tzinfo=PLUS2),
    "span": dt.timedelta(microseconds=-1),
    "uid": uuid.UUID(int=0),
    "doc": {"nested": {"deep": [True, False]}},
    "list_doc": [],
    "raw": b"",
    "nums": [],
}


def micros(t: dt.timedelta) -> int:
    return (t.days * 86400 + t.seconds) * 1_000_000 + t.microseconds


def utc_naive(v: dt.datetime) -> dt.datetime:
    return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v


def time_delta(t: dt.time) -> dt.timedelta:
    return dt.timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def utc_time(t: dt.time) -> dt.time:
    return dt.datetime.combine(dt.date(2000, 1, 3), t).astimezone(dt.UTC).time() if t.tzinfo else t


def expected(kind: str, v: dict[str, Any]) -> dict[str, Any]:
    """What reading the row back with the database's own driver gives."""
    out = dict(v)
    if kind == "postgres":
        return out
    out["flag"] = int(v["flag"])
    out["span"] = micros(v["span"])
    out["uid"] = str(v["uid"])
    out["nums"] = v["nums"]  # JSON text, compared parsed
    if kind == "mariadb":
        out["at_time"] = time_delta(v["at_time"])
        out["at_timetz"] = time_delta(utc_time(v["at_timetz"]))
        out["tstz"] = utc_naive(v["tstz"])
        return out
    out["price"] = str(v["price"])
    out["huge"] = str(v["huge"])
    out["day"] = v["day"].isoformat()
    out["at_time"] = v["at_time"].isoformat()
    out["at_timetz"] = v["at_timetz"].isoformat()
    out["ts"] = v["ts"].isoformat(" ")
    out["tstz"] = v["tstz"].astimezone(dt.UTC).isoformat(" ")
    return out


def read_back(d: Dest) -> dict[str, Any]:
    names = [c.name for c in SCHEMA.columns]
    rows = d.query("SELECT " + ", ".join(f'"{n}"' for n in names) + ' FROM "typed"')
    assert len(rows) == 1
    got = dict(zip(names, rows[0], strict=True))
    for name in ("doc", "list_doc", "nums"):
        if isinstance(got[name], str):
            got[name] = json.loads(got[name])
    if isinstance(got["raw"], memoryview):
        got["raw"] = bytes(got["raw"])
    return got


def typed(op: str, values: dict[str, Any], pos: int) -> ChangeEvent:
    changed = tuple(k for k in values if k not in ("id", "code")) if op == "update" else None
    return ChangeEvent(
        "public.typed", (values["id"], values["code"]), op, after=values, changed=changed, position=(pos,)
    )


async def test_each_type_round_trips(dest: Dest) -> None:
    dest.schemas.put(SCHEMA)
    sink = await dest.sink(create_tables=True)
    await sink.write([typed("insert", V1, 1)])
    assert read_back(dest) == expected(dest.kind, V1)
    # Scalars first (Postgres binds one array per column), then the array column (Postgres stages it).
    scalars = {k: v for k, v in V2.items() if k != "nums"}
    await sink.write([typed("update", scalars, 2)])
    assert read_back(dest) == expected(dest.kind, dict(V2, nums=V1["nums"]))
    await sink.write([typed("update", {"id": 1, "code": "a-1", "nums": V2["nums"]}, 5)])
    assert read_back(dest) == expected(dest.kind, V2)
    # Upsert of an existing row (the insert path converts every type as well).
    await sink.write([typed("snapshot", V1, 6)])
    assert read_back(dest) == expected(dest.kind, V1)
    await sink.write(
        [ChangeEvent("public.typed", (1, "a-1"), "delete", before={"id": 1, "code": "a-1"}, position=(7,))]
    )
    assert dest.query('SELECT count(*) FROM "typed"')[0][0] == 0


async def test_values_in_other_drivers_shapes_are_taken(dest: Dest) -> None:
    """A MariaDB or SQLite source delivers booleans as 0/1, uuids, decimals and JSON as text."""
    dest.schemas.put(SCHEMA)
    sink = await dest.sink(create_tables=True)
    foreign = dict(V1, flag=1, uid=str(UID), price="12345678.1234", doc=json.dumps(V1["doc"]))
    await sink.write([typed("insert", foreign, 1)])
    assert read_back(dest) == expected(dest.kind, V1)
    await sink.write([typed("update", dict(foreign, flag=0, uid=str(uuid.UUID(int=0)), price="-0.0001"), 2)])
    got = read_back(dest)
    want = expected(dest.kind, dict(V1, flag=False, uid=uuid.UUID(int=0), price=Decimal("-0.0001")))
    assert (got["flag"], got["uid"], got["price"]) == (want["flag"], want["uid"], want["price"])


async def test_created_table_has_the_schema_key_and_types(dest: Dest) -> None:
    dest.schemas.put(SCHEMA)
    sink = await dest.sink(create_tables=True)
    await sink.write([typed("insert", V1, 1)])
    info = await sink.backend.describe(sink._table_name("public.typed"), None)
    assert info is not None
    assert info.key == ("id", "code")
    assert list(info.columns) == [c.name for c in SCHEMA.columns]
    kinds = {n: c.kind for n, c in info.columns.items()}
    if dest.kind == "postgres":
        assert {n: c.native for n, c in info.columns.items()} == {
            "id": "bigint",
            "code": "character varying(10)",
            "small": "smallint",
            "i32": "integer",
            "big": "bigint",
            "price": "numeric(12,4)",
            "huge": "numeric",
            "f32": "real",
            "f64": "double precision",
            "label": "character varying(60)",
            "note": "text",
            "flag": "boolean",
            "day": "date",
            "at_time": "time without time zone",
            "at_timetz": "time with time zone",
            "ts": "timestamp without time zone",
            "tstz": "timestamp with time zone",
            "span": "interval",
            "uid": "uuid",
            "doc": "jsonb",
            "list_doc": "jsonb",
            "raw": "bytea",
            "nums": "integer[]",
        }
    elif dest.kind == "mariadb":
        assert kinds["price"] == "decimal" and info.columns["price"].native == "decimal(12,4)"
        assert info.columns["huge"].native == "decimal(65,30)"
        assert info.columns["tstz"].native == "datetime(6)"
        assert info.columns["span"].native == "bigint(20)"
        assert info.columns["uid"].native == "char(36)"
        assert kinds["flag"] == "bool"
    else:
        assert info.columns["price"].native == "TEXT"
        assert info.columns["span"].native == "INTEGER"
        assert info.columns["raw"].native == "BLOB"
    assert not info.columns["id"].nullable and not info.columns["code"].nullable
