"""Every supported type arrives as the exact Python value psycopg 3 gives for a SELECT of the same row.

Two paths: the whole source over the replication protocol, and the pure decoder
over real pgoutput bytes from ``pg_logical_slot_peek_binary_changes``.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import psycopg
from pgs_helpers import Harness, sql
from psycopg.types import TypeInfo
from psycopg.types.string import TextLoader

from tidesync.sources.postgres.catalog import connect, load_types, session_dsn
from tidesync.sources.postgres.pgoutput import UNCHANGED, Insert, Relation, decode_message
from tidesync.sources.postgres.types import TypeMap

UTC = dt.UTC

SCHEMA = [
    "CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s ok')",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    "CREATE DOMAIN email AS text",
    "CREATE DOMAIN ints AS int[]",
    """CREATE TABLE typed (
        id int PRIMARY KEY,
        i2 smallint, i4 integer, i8 bigint, num numeric, num_p numeric(10, 2), r real, d double precision,
        t text, vc varchar(10), c char(5), nm name, ch "char",
        b boolean,
        dt date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
        u uuid, j json, jb jsonb, by bytea,
        ai int[], a2 int[][], at text[], an numeric[], aj jsonb[], ab bytea[], ats timestamptz[], ad date[],
        m mood, am mood[], p posint, e email, di ints,
        inet_v inet, rng int4range, pt point
    )""",
]

ROWS = [
    """INSERT INTO typed VALUES (
        1, -32768, -2147483648, 9223372036854775807, 12345678901234567890.123456789, 99999999.99, 1.5, 0.1,
        'héllo wörld ✓', 'abc', 'ab', 'a_name', 'x',
        true,
        '2024-02-29', '13:14:15.123456', '13:14:15+05:30', '2001-02-03 04:05:06.789', '2001-02-03 04:05:06+02',
        '1 year 2 mons 3 days 04:05:06.5',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.5, null], "big": 123456789012345678901234567890}',
        '{"nested": {"k": "v"}, "list": [true, false]}', '\\x00ff10'::bytea,
        '{1,NULL,3}', '{{1,2},{3,4}}', '{"a,b","with \\"quote\\"","back\\\\slash",NULL,"",NULL}',
        '{1.5,NaN,-2}', ARRAY['{"x": 1}'::jsonb, NULL], ARRAY['\\x0102'::bytea, '\\x'::bytea],
        ARRAY['2020-01-01 00:00:00+00'::timestamptz], '{2024-01-01,NULL}',
        'it''s ok', '{happy,sad}', 7, 'me@example.com', '{4,5}',
        '192.168.0.1/24', '[1,5)', '(1.5,2)'
    )""",
    "INSERT INTO typed (id) VALUES (2)",
    """INSERT INTO typed (id, num, r, d, t, c, iv, tstz, ts, jb, at, ai, tm) VALUES (
        3, 'NaN', 'NaN', '-Infinity', '', '', '-1 days +02:03:00', '1999-12-31 23:59:59.999999-08',
        '0001-01-01 00:00:00', '[]', '{}', '{}', '00:00:00'
    )""",
    """INSERT INTO typed (id, num, r, d, iv, i8, j, jb) VALUES (
        4, 'Infinity', 'Infinity', 1e308, '-00:00:01.5', -9223372036854775808, '1e400', '"just a string"'
    )""",
]

# Values psycopg 3 cannot load (it raises): checked against tidesync's documented choices.
SPECIAL_ROW = """INSERT INTO typed (id, dt, ts, tstz, num, ad) VALUES (
    5, 'infinity', '-infinity', 'infinity', '-Infinity', '{infinity,-infinity}'
)"""
SPECIAL_EXPECTED = {
    "dt": dt.date.max,
    "ts": dt.datetime.min,
    "tstz": dt.datetime.max.replace(tzinfo=UTC),
    "num": Decimal("-Infinity"),
    "ad": [dt.date.max, dt.date.min],
}


def expected_rows(dsn: str) -> dict[int, dict[str, Any]]:
    """The rows as psycopg 3 reads them (text results; unknown types as their text)."""
    with psycopg.connect(session_dsn(dsn)) as conn:
        for name in ("inet", "int4range", "point"):
            conn.adapters.register_loader(name, TextLoader)
        # arrays of an enum load as lists of str once psycopg knows the type (tidesync looks it up itself)
        info = TypeInfo.fetch(conn, "mood")
        assert info is not None
        info.register(conn)
        cur = conn.execute("SELECT * FROM typed WHERE id <> 5 ORDER BY id")
        names = [d.name for d in cur.description or []]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type, NaN equal to NaN, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return b.is_nan()
    if isinstance(a, dt.datetime | dt.time):
        return a == b and (a.utcoffset() == b.utcoffset())
    return bool(a == b)


def assert_rows_match(got: dict[str, Any], want: dict[str, Any]) -> None:
    bad = {k: (got.get(k, "<absent>"), want[k]) for k in want if not same(got.get(k), want[k])}
    assert not bad, f"row {want['id']}: (tidesync, psycopg) differ: {bad}"
    assert set(got) == set(want)


def create(dsn: str) -> None:
    sql(dsn, *SCHEMA)


def fill(dsn: str) -> None:
    sql(dsn, *ROWS, SPECIAL_ROW)


async def test_every_type_through_the_source(harness: Harness) -> None:
    create(harness.dsn)
    await harness.open(["typed"], snapshot="never")
    fill(harness.dsn)
    events = await harness.read_n(5)
    want = expected_rows(harness.dsn)
    by_id = {e.key[0]: e.after for e in events}
    for i, row in want.items():
        assert_rows_match(by_id[i], row)
    special = by_id[5]
    assert special is not None
    for k, v in SPECIAL_EXPECTED.items():
        assert same(special[k], v), (k, special[k], v)
    schema = harness.schemas.get("public.typed")
    assert schema is not None
    types = {c.name: (c.type, c.item) for c in schema.columns}
    assert types["m"] == ("string", None) and types["am"] == ("array", "string")
    assert types["p"] == ("int32", None) and types["di"] == ("array", "int32")
    assert types["num_p"] == ("decimal", None) and schema.column("num_p").precision == 10  # type: ignore[union-attr]
    assert types["rng"] == ("unknown", None) and types["tstz"] == ("timestamptz", None)


async def test_snapshot_reads_the_same_values_as_the_stream(harness: Harness) -> None:
    create(harness.dsn)
    fill(harness.dsn)
    await harness.open(["typed"])  # snapshot: initial
    events = await harness.read_n(5)
    assert {e.op for e in events} == {"snapshot"}
    want = expected_rows(harness.dsn)
    by_id = {e.key[0]: e.after for e in events}
    for i, row in want.items():
        assert_rows_match(by_id[i], row)
    for k, v in SPECIAL_EXPECTED.items():
        assert same(by_id[5][k], v), k  # type: ignore[index]


async def test_decoder_on_real_server_bytes(pg_database: str) -> None:
    dsn = pg_database
    create(dsn)
    sql(
        dsn,
        "CREATE PUBLICATION peek_pub FOR TABLE typed",
        "SELECT pg_create_logical_replication_slot('peek_slot', 'pgoutput')",
    )
    fill(dsn)
    sql(dsn, "UPDATE typed SET t = 'changed' WHERE id = 1")
    with psycopg.connect(session_dsn(dsn), autocommit=True) as conn:
        raw = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes("
                "'peek_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'peek_pub')"
            ).fetchall()
        ]
    messages = [decode_message(b) for b in raw]
    kinds = [type(m).__name__ for m in messages]
    assert kinds[:3] == ["Begin", "Relation", "Type"] or "Relation" in kinds
    rel = next(m for m in messages if isinstance(m, Relation))
    assert rel.name == "typed" and [c.name for c in rel.columns][:2] == ["id", "i2"]
    assert [c.is_key for c in rel.columns][:2] == [True, False]
    types = TypeMap()
    conn_a = await connect(dsn)
    try:
        await load_types(conn_a, types, types.missing([c.type_oid for c in rel.columns]))
    finally:
        await conn_a.close()
    convs = [types.converter(c.type_oid) for c in rel.columns]
    names = [c.name for c in rel.columns]
    decoded = {}
    for m in messages:
        if isinstance(m, Insert):
            row = {n: (None if v is None else conv(v)) for n, conv, v in zip(names, convs, m.new, strict=True)}
            decoded[row["id"]] = row
    want = expected_rows(dsn)
    for i, row in want.items():
        assert_rows_match(decoded[i], {**row, "t": decoded[i]["t"]} if i == 1 else row)
    for k, v in SPECIAL_EXPECTED.items():
        assert same(decoded[5][k], v), k
    update = messages[[type(m).__name__ for m in messages].index("Update")]
    assert update.old is None and update.new[names.index("t")] == b"changed"  # type: ignore[attr-defined]
    assert UNCHANGED not in update.new  # type: ignore[attr-defined]
