"""MariaDB never cuts or rounds a value: a value its column cannot hold exactly fails its event.

The sink's sessions run in a strict SQL mode (too-long strings, out-of-range
numbers and zero dates are server errors) and the sink itself refuses the
values strict mode would still round (extra decimal digits, fractions in an
integer column, extra fractional seconds). Each bad event reaches the
dead-letter queue through the engine's own delivery wrappers; the good events
of its batch land unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import Dest, ev
from tidesync.engine.delivery import DeadLetterWriter, RetryingWriter
from tidesync.errors import PermanentError
from tidesync.retry import RetryPolicy
from tidesync.sinks.sql.common import SqlSink
from tidesync.sinks.sql.mariadb import MariadbBackend
from tidesync.testing import FakeClock

MARIADB = pytest.mark.parametrize("dest", ["mariadb"], indirect=True)

# (column type, a value it holds exactly, a value it cannot hold exactly, words of the error)
CASES = [
    ("VARCHAR(5)", "short", "far too long", "too long"),
    ("INT", 2**31 - 1, 2**31, "out of range"),
    ("TINYINT", -128, 300, "out of range"),
    ("DECIMAL(10,2)", Decimal("1.230"), Decimal("1.234"), "fractional digits"),
    ("DECIMAL(10,2)", Decimal("12345678.99"), 1.235, "fractional digits"),
    ("DECIMAL(10,2)", "7.5", "7.505", "fractional digits"),
    ("DECIMAL(10,2)", Decimal("1.23"), Decimal("123456789.5"), "out of range"),
    ("INT", Decimal("2.000"), Decimal("2.5"), "not a whole number"),
    ("BIGINT", 3.0, 2.5, "not a whole number"),
    ("DATETIME", dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 1, 12, 0, 0, 700000), "fractional seconds"),
    ("DATETIME(3)", dt.datetime(2024, 1, 1, 12, 0, 0, 5000), "2024-01-01 12:00:00.0005", "fractional seconds"),
    ("DATE", dt.date(2024, 2, 29), "0000-00-00", "incorrect date"),
    ("DATE", "2024-02-29", "2024-00-10", "incorrect date"),
]
IDS = [
    "varchar-too-long",
    "int-out-of-range",
    "tinyint-out-of-range",
    "decimal-scale",
    "decimal-scale-float",
    "decimal-scale-text",
    "decimal-out-of-range",
    "int-fraction",
    "bigint-float-fraction",
    "datetime-fraction",
    "datetime3-fraction-text",
    "zero-date",
    "zero-in-date",
]


def names_column(message: str, column: str = "v") -> bool:
    return re.search(rf"[`']{column}[`']", message) is not None


def dead_letter_writer(sink: SqlSink) -> DeadLetterWriter:
    clock = FakeClock()
    return DeadLetterWriter(RetryingWriter(sink, RetryPolicy(max_attempts=1), clock), "p1", "sink", clock)


@MARIADB
async def test_the_session_sql_mode_is_strict(dest: Dest) -> None:
    sink = await dest.sink()
    backend = sink.backend
    assert isinstance(backend, MariadbBackend)

    def mode() -> str:
        with backend._c.cur() as cur:  # the sink's own connection, in its worker thread
            cur.execute("SELECT @@SESSION.sql_mode")
            return str(cur.fetchone()[0])

    flags = set((await backend._w.call(mode)).split(","))
    assert {"STRICT_ALL_TABLES", "NO_ZERO_DATE", "NO_ZERO_IN_DATE", "ERROR_FOR_DIVISION_BY_ZERO"} <= flags
    # Replaced, not extended: a server default that changes values (such as '' -> NULL) is not kept.
    assert "EMPTY_STRING_IS_NULL" not in flags and "ALLOW_INVALID_DATES" not in flags


@MARIADB
@pytest.mark.parametrize(("ctype", "good", "bad", "words"), CASES, ids=IDS)
async def test_a_value_the_column_cannot_hold_dead_letters_its_event(
    dest: Dest, ctype: str, good: Any, bad: Any, words: str
) -> None:
    dest.exec(f'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "v" {ctype})')
    sink = await dest.sink()
    batch = [
        ev("insert", 1, 1, after={"id": 1, "v": good}),
        ev("insert", 2, 2, after={"id": 2, "v": bad}),
        ev("insert", 3, 3, after={"id": 3, "v": good}),
    ]
    with pytest.raises(PermanentError) as info:
        await sink.write(batch)
    message = str(info.value)
    assert words in message.lower() and names_column(message), message
    assert dest.rows() == [] and dest.applied() is None  # the failed batch left nothing
    letters = await dead_letter_writer(sink).deliver(batch)
    assert [(d.event.position, d.error_class) for d in letters] == [((2,), "permanent")]
    assert words in letters[0].error.lower() and names_column(letters[0].error), letters[0].error
    assert [r[0] for r in dest.rows()] == [1, 3]
    assert dest.applied() is not None


@MARIADB
@pytest.mark.parametrize(
    ("ctype", "old", "bad", "words"),
    [
        ("DECIMAL(10,2)", Decimal("1.00"), Decimal("1.239"), "fractional digits"),
        ("VARCHAR(5)", "short", "far too long", "too long"),
        ("INT", 7, 2**40, "out of range"),
        ("DATE", dt.date(2024, 1, 1), "0000-00-00", "incorrect date"),
    ],
    ids=["decimal-scale", "varchar-too-long", "int-out-of-range", "zero-date"],
)
async def test_an_update_with_a_value_the_column_cannot_hold_dead_letters(
    dest: Dest, ctype: str, old: Any, bad: Any, words: str
) -> None:
    # Updates go through a derived table (UPDATE .. JOIN (SELECT ..)): the same values fail there too.
    dest.exec(f'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "v" {ctype})')
    dest.exec('INSERT INTO "items" ("id", "v") VALUES (1, ?), (2, ?)', [old, old])
    sink = await dest.sink()
    batch = [
        ev("update", 1, 1, after={"id": 1, "v": bad}, changed=("v",)),
        ev("update", 2, 2, after={"id": 2, "v": None}, changed=("v",)),
    ]
    with pytest.raises(PermanentError) as info:
        await sink.write(batch)
    assert words in str(info.value).lower() and names_column(str(info.value)), str(info.value)
    letters = await dead_letter_writer(sink).deliver(batch)
    assert [d.event.position for d in letters] == [(1,)]
    assert dest.rows() == [(1, old), (2, None)]  # row 1 kept its value, not a cut or rounded one


@MARIADB
async def test_exact_values_land_unchanged(dest: Dest) -> None:
    dest.exec(
        'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "d" DECIMAL(10,2), "i" INT, "t" DATETIME(3), "s" VARCHAR(5))'
    )
    sink = await dest.sink()
    await sink.write(
        [
            ev("insert", 1, 1, after={"id": 1, "d": Decimal("-99999999.990"), "i": 5.0, "s": "12345"}),
            ev("insert", 2, 2, after={"id": 2, "d": "0.5", "i": "-7", "t": dt.datetime(2024, 5, 6, 7, 8, 9, 120000)}),
        ]
    )
    assert dest.rows() == [
        (1, Decimal("-99999999.99"), 5, None, "12345"),
        (2, Decimal("0.50"), -7, dt.datetime(2024, 5, 6, 7, 8, 9, 120000), None),
    ]
